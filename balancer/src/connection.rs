//! One HTTP/2 connection to a node, driven with the `h2` crate itself.
//!
//! Why not a tonic `Channel`, or hyper's client? Both are built for callers
//! that stream, and pay for it on every request. A `Channel` hands each request
//! to a `tower::buffer` worker task first. hyper's client passes it to its
//! dispatch task, spawns a task to wait for the response and, because a new
//! stream has no flow-control credit yet, a third to send the body: the
//! HEADERS frame and the DATA frame left in two separate writes, and the node
//! woke up twice (`strace -f -c` on the balancer showed 3 writes per request).
//!
//! Every RPC the balancer makes is unary, so the request body is one encoded
//! message, complete before anything is sent. We give h2 the headers and the
//! whole body at once; the connection's task then writes both in one go and the
//! response comes straight back to the caller's task. Two writes per request:
//! one to the node, one to the client. Forwarded requests go through
//! [`Http2::unary`], which passes the message on as bytes; health checks and
//! `Admin.WhoAmI` use tonic's generated clients, for which [`Http2`] is a tower
//! service.
//!
//! The connection is made at the first request (or health check), shared by all
//! of them (HTTP/2 multiplexes), and made again the first time it is needed
//! after it broke, or once it has given out its stream numbers
//! (`STREAMS_PER_CONNECTION`). Every RPC to the node goes over it: forwarded requests,
//! health checks and `Admin.WhoAmI`, so a check also tests the connection that
//! carries the traffic.

use std::{
    error::Error,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use certs::dial::Dialer;
use futures::FutureExt;
use h2::client::SendRequest;
use http::{
    HeaderMap,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::Frame;
use http_body_util::BodyExt;
use node::limits::MAX_MESSAGE_BYTES;
use tonic::{Status, body::Body};
use tracing::{debug, info};

use crate::grpc::{Framed, read_unary};

/// A ping goes to the node this often, so a dead node is noticed on an idle
/// connection too, not only by the health checks that share it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A node that has not answered a ping within this is taken for gone.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Flow-control windows, as hyper's client sets them: large enough that a
/// value near the size limit crosses without waiting for window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// [`Http2`]'s state, in bits. How the connection ended, under [`ENDED`]:
/// still open...
const OPEN: u8 = 0;
/// ...ended: the node hung up, or the connection broke (or is going: h2
/// closed it for its own resets, [`is_worn_out`], its GOAWAY perhaps still
/// being written)...
const CLOSED: u8 = 1;
/// ...or ended because the node stopped answering pings.
const HUNG: u8 = 2;
const ENDED: u8 = CLOSED | HUNG;
/// And whether the node ever answered on it: a connection over plaintext
/// that breaks before the first answer is most likely a TLS node hanging up.
const ANSWERED: u8 = 4;

/// Handles a connection gives out before the next request dials a new one.
///
/// HTTP/2 numbers a connection's streams, and a client's are the odd
/// numbers below 2^31: one connection carries 2^30 requests, and h2 then
/// fails every new one ("stream ID overflowed") while the connection
/// itself stays up, so it would never be dialed again. That is a day or
/// two of a soak test at full speed. A handle usually carries one request
/// (the dashboard's view of a node, two), so this leaves a margin of a
/// million. The old connection finishes the requests it has and closes
/// once the last handle on it is dropped.
const STREAMS_PER_CONNECTION: u32 = (1 << 30) - (1 << 20);

/// A node's connection: dialed when first needed, re-dialed after it breaks
/// (or before it runs out of stream numbers).
#[derive(Debug)]
pub struct NodeConnection {
    addr: Arc<str>,
    host: String,
    port: u16,
    /// `http://host:port`: tonic's clients need it to fill in `:authority`.
    origin: http::Uri,
    dialer: Dialer,
    /// The live connection. A std lock, held only to clone the handle.
    current: std::sync::Mutex<Option<Http2>>,
    /// Handles given out on the live connection, counted under `current`'s
    /// lock, and how many it may give ([`STREAMS_PER_CONNECTION`]).
    handed_out: std::sync::atomic::AtomicU32,
    streams_per_connection: u32,
    /// Reset streams a connection remembers ([`certs::dial::RESETS_REMEMBERED`];
    /// fewer in a test, to reach h2's lifetime limit sooner).
    resets_remembered: usize,
    /// Held while dialing, so that a burst of requests makes one connection.
    dialing: tokio::sync::Mutex<()>,
    /// When the last dial failed, and how: the requests that waited for
    /// that dial take its failure rather than dial again, one after another
    /// (each for up to the connect timeout, at an address that does not
    /// answer), and go elsewhere.
    last_failure: std::sync::Mutex<Option<(Instant, Status)>>,
    /// The node shut down gracefully (it sent GOAWAY), and has not been
    /// dialed since: a dial that fails says so, and is no failure of the
    /// node's (a request that chose it a moment before it went).
    shut_down: std::sync::atomic::AtomicBool,
    /// Told when a connection's task ends: see [`NodeConnection::said_goodbye`].
    closed: Arc<tokio::sync::Notify>,
    /// Connections made so far: what answers at the address may have changed
    /// at each ([`NodeConnection::dials`]).
    dials: std::sync::atomic::AtomicU64,
}

impl NodeConnection {
    /// A connection to `addr` (`host:port`), not dialed yet.
    pub fn new(addr: &str, dialer: Dialer) -> Result<Self, String> {
        let origin: http::Uri = format!("http://{addr}")
            .parse()
            .map_err(|e| format!("{addr:?} is not HOST:PORT: {e}"))?;
        let (Some(host), Some(port)) = (origin.host(), origin.port_u16()) else {
            return Err(format!("{addr:?} is not HOST:PORT"));
        };
        Ok(NodeConnection {
            addr: addr.into(),
            host: host.to_string(),
            port,
            origin,
            dialer,
            current: std::sync::Mutex::new(None),
            handed_out: std::sync::atomic::AtomicU32::new(0),
            streams_per_connection: STREAMS_PER_CONNECTION,
            resets_remembered: certs::dial::RESETS_REMEMBERED,
            dialing: tokio::sync::Mutex::new(()),
            last_failure: std::sync::Mutex::new(None),
            shut_down: std::sync::atomic::AtomicBool::new(false),
            closed: Arc::new(tokio::sync::Notify::new()),
            dials: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many connections have been made to the address: each may reach
    /// another process (a node restarted, or another started on its port).
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::Relaxed)
    }

    /// `http://host:port`, for `Client::with_origin`.
    pub fn origin(&self) -> http::Uri {
        self.origin.clone()
    }

    /// A handle on the live connection, dialing first if there is none.
    pub async fn ready(&self) -> Result<Http2, Status> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let asked = Instant::now();
        let _dialing = self.dialing.lock().await;
        // Someone else may have dialed while we waited...
        if let Some(live) = self.live() {
            return Ok(live);
        }
        // ...and failed: so do we, at once.
        if let Some((failed_at, failure)) = &*self.last_failure.lock().expect("failure poisoned")
            && *failed_at >= asked
        {
            return Err(failure.clone());
        }
        if self.ended_by_shutdown() {
            self.shut_down.store(true, Ordering::Relaxed);
        }
        let connection = tokio::time::timeout(self.dialer.connect_timeout, self.dial())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no connection within {:?}",
                    self.dialer.connect_timeout
                ))
            })
            .map_err(|cause| match self.shut_down.load(Ordering::Relaxed) {
                // It said it was going before it hung up: that is the news.
                true => failed(
                    format!(
                        "{} has shut down: it sent GOAWAY and closed the connection, and \
                         cannot be reached now: {cause}",
                        self.addr
                    ),
                    Failure::ShuttingDown,
                ),
                false => connection_failed(format!("cannot reach {}: {cause}", self.addr)),
            })
            .inspect_err(|failure| {
                *self.last_failure.lock().expect("failure poisoned") =
                    Some((Instant::now(), failure.clone()));
            })?;
        self.shut_down.store(false, Ordering::Relaxed);
        self.dials.fetch_add(1, Ordering::Relaxed);
        let mut current = self.current.lock().expect("connection poisoned");
        *current = Some(connection.clone());
        self.handed_out.store(1, Ordering::Relaxed);
        Ok(connection)
    }

    /// Completes when the node has shut its connection gracefully (GOAWAY),
    /// with the reason to eject it for, unless it was dialed again since.
    ///
    /// A request on the connection would learn it too, but an idle one has
    /// none: without this the node would be out only at the next health
    /// check, whose dial may hang (a stopped container's address answers
    /// nothing), and Docker's DNS may drop the address first, so the reason
    /// would never say the node shut down.
    pub async fn said_goodbye(&self) -> String {
        loop {
            self.closed.notified().await;
            // The connection we hold now, which may be newer than the one
            // that closed, or gone (a request already dialed again).
            let current = self.current.lock().expect("connection poisoned").clone();
            if current.is_some_and(|mut ended| ended.is_ended() && ended.said_goodbye()) {
                return shutting_down(&self.addr).message().to_string();
            }
        }
    }

    /// Whether the connection, now ended, was ended by the node shutting
    /// down gracefully: it sent GOAWAY without an error first. Forgets the
    /// connection either way, so the next call dials.
    fn ended_by_shutdown(&self) -> bool {
        let ended = self.current.lock().expect("connection poisoned").take();
        ended.is_some_and(|mut ended| ended.said_goodbye())
    }

    /// A handle on the live connection, if it is open and has stream
    /// numbers to spare; else `None`, and the caller dials.
    fn live(&self) -> Option<Http2> {
        let mut current = self.current.lock().expect("connection poisoned");
        let live = current.as_ref().filter(|live| !live.is_ended())?;
        let handed_out = self.handed_out.load(Ordering::Relaxed);
        if handed_out >= self.streams_per_connection {
            debug!(addr = %self.addr, handed_out, "connection retired: its stream numbers run out");
            *current = None;
            return None;
        }
        self.handed_out.store(handed_out + 1, Ordering::Relaxed);
        Some(live.clone())
    }

    async fn dial(&self) -> Result<Http2, String> {
        let (stream, _) = self
            .dialer
            .dial_stream(&self.host, self.port)
            .await
            .map_err(|e| match certs::explain::find_rustls_error(&e) {
                Some(tls) => certs::explain::failed_connection(tls),
                None => e.to_string(),
            })?;
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // Answers that crossed our resets (a client gone, a deadline run
            // out) are dropped quietly, not reset again toward h2's lifetime
            // limit of 1024, which closed the connection.
            .max_concurrent_reset_streams(self.resets_remembered)
            .handshake(stream)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let ping_pong = connection.ping_pong().expect("asked for only once");
        let state = Arc::new(AtomicU8::new(OPEN));
        let addr = self.addr.clone();
        let flag = state.clone();
        // Not a handle on the connection (h2 closes a connection once no
        // handle is left), but word of its end.
        let closed = self.closed.clone();
        // The connection's task: it reads and writes the socket for every
        // request on it. It ends when the node hangs up or stops answering pings.
        tokio::spawn(async move {
            let keepalive =
                crate::http2::keepalive(ping_pong, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT);
            let reason = tokio::select! {
                ended = &mut connection => {
                    flag.fetch_or(CLOSED, Ordering::AcqRel);
                    closed.notify_one();
                    match ended {
                        Ok(()) => "closed".to_string(),
                        // Its own GOAWAY's words are on the requests' errors
                        // alone: the connection's has its reason only.
                        Err(e) if is_calmed_down(&e) => {
                            info!(%addr, "closed the connection to the node for one of h2's \
                                          own limits (ENHANCE_YOUR_CALM; most often \
                                          {WORN_OUT_SHORT}, and the requests on it say so); \
                                          the next request dials a new one");
                            e.to_string()
                        }
                        Err(e) => e.to_string(),
                    }
                }
                reason = keepalive => {
                    // Said before the connection is dropped, which fails the
                    // requests still on it: they must know the node hung.
                    flag.fetch_or(HUNG, Ordering::AcqRel);
                    reason
                }
            };
            debug!(%addr, %reason, "connection to node closed");
        });
        Ok(Http2 {
            sender,
            addr: self.addr.clone(),
            authority: self
                .origin
                .authority()
                .expect("made from host:port")
                .clone(),
            state,
            plaintext: self.dialer.is_plaintext(),
        })
    }
}

/// A handle on a node's connection. Forwarded requests go through
/// [`Http2::unary`]; tonic's generated clients (health checks, `WhoAmI`) call
/// it as a tower service.
#[derive(Debug, Clone)]
pub struct Http2 {
    sender: SendRequest<Bytes>,
    addr: Arc<str>,
    authority: Authority,
    /// How the connection's task ended, if it did ([`ENDED`]), and whether
    /// the node ever answered on it ([`ANSWERED`]).
    state: Arc<AtomicU8>,
    /// Dialed without TLS (`--tls plaintext`): a node that hangs up before
    /// its first answer probably requires TLS, and the failure says so.
    plaintext: bool,
}

/// A node's successful answer to a unary call, as it arrived.
#[derive(Debug)]
pub struct Answer {
    pub head: http::response::Parts,
    pub message: Framed,
    pub trailers: HeaderMap,
}

impl Http2 {
    /// Whether the connection's task has ended, or is ending and takes no
    /// more requests (worn out): either way, the next request dials anew.
    fn is_ended(&self) -> bool {
        self.state.load(Ordering::Acquire) & ENDED != OPEN
    }

    /// Whether the connection, if it ended, was ended by the node's GOAWAY
    /// without an error: h2 keeps the error that ended a connection, and
    /// every handle reports it.
    fn said_goodbye(&mut self) -> bool {
        let ready = std::future::poll_fn(|cx| self.sender.poll_ready(cx)).now_or_never();
        matches!(ready, Some(Err(e)) if is_goodbye(&e))
    }

    /// Sends `message` (one framed gRPC message) to `path` and reads the whole
    /// answer. A gRPC error from the node comes back as that status; a broken
    /// connection as a [connection failure](is_connection_failure).
    pub async fn unary(
        &self,
        path: PathAndQuery,
        headers: HeaderMap,
        message: Bytes,
    ) -> Result<Answer, Status> {
        self.send_unary(path, headers, message).await
    }

    /// An h2 error on a connection in `state` as a status: [`h2_failure`],
    /// except that once the keepalive gave up on the node ([`HUNG`]), a
    /// broken connection is told as a node that stopped answering, whichever
    /// request, health check or response body saw it. (Dropping the hung
    /// connection fails them all with an I/O error that reads as "cut".)
    fn failure(addr: &str, e: h2::Error, plaintext: bool, state: &AtomicU8) -> Status {
        // Over plaintext, a connection that breaks before its first answer
        // may be a TLS node hanging up on us.
        let maybe_tls = plaintext && state.load(Ordering::Relaxed) & ANSWERED == 0;
        if is_worn_out(&e) {
            // Going: the next request (or health check) dials a new one
            // rather than take this one, before its task has ended, and fail.
            state.fetch_or(CLOSED, Ordering::AcqRel);
        }
        let status = h2_failure(addr, e, maybe_tls);
        let hung_up_on = state.load(Ordering::Acquire) & HUNG != 0;
        match hung_up_on && is_connection_failure(&status) {
            true => hung(addr, KEEPALIVE_TIMEOUT),
            false => status,
        }
    }

    /// Notes that the node answered, once (a load, not a write, after that).
    fn answered(state: &AtomicU8) {
        if state.load(Ordering::Relaxed) & ANSWERED == 0 {
            state.fetch_or(ANSWERED, Ordering::Relaxed);
        }
    }

    async fn send_unary(
        &self,
        path: PathAndQuery,
        headers: HeaderMap,
        message: Bytes,
    ) -> Result<Answer, Status> {
        let addr = &self.addr;
        let h2_failure = |e| Self::failure(addr, e, self.plaintext, &self.state);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_parts(uri).expect("scheme, authority and path");
        *request.headers_mut() = headers;
        let mut sender = self.sender.clone().ready().await.map_err(h2_failure)?;
        let (response, mut stream) = sender.send_request(request, false).map_err(h2_failure)?;
        stream.send_data(message, true).map_err(h2_failure)?;
        let (head, body) = response.await.map_err(h2_failure)?.into_parts();
        Self::answered(&self.state);
        if head.status != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "{addr} answered HTTP {}, not a gRPC response",
                head.status
            )));
        }
        // A node that fails at once answers with headers alone ("trailers-only").
        // An OK there is an answer without its message: passed on as it is,
        // it would be a success the client cannot read, in the trace as one.
        if let Some(status) = status_in(&head.headers) {
            return Err(match status.code() {
                tonic::Code::Ok => {
                    Status::internal(format!("{addr} answered OK without a message"))
                }
                _ => status,
            });
        }
        let body = ResponseBody {
            body,
            addr: addr.clone(),
            state: self.state.clone(),
        };
        let unary = read_unary(body, MAX_MESSAGE_BYTES).await?;
        let trailers = unary.trailers.unwrap_or_default();
        // Only the code, at first: most answers are OK, and tonic's full parse
        // (message, details, a copy of the other trailers) is for failures.
        let code = trailers
            .get("grpc-status")
            .map(|code| tonic::Code::from_bytes(code.as_bytes()));
        match (code, unary.message) {
            (Some(tonic::Code::Ok), Some(message)) => Ok(Answer {
                head,
                message,
                trailers,
            }),
            (Some(tonic::Code::Ok), None) => Err(Status::internal(format!(
                "{addr} answered OK without a message"
            ))),
            (Some(_), _) => Err(status_in(&trailers).expect("a grpc-status")),
            (None, _) => Err(Status::internal(format!(
                "{addr}'s response ended without a grpc-status"
            ))),
        }
    }
}

/// The gRPC status in a node's headers or trailers, if any: tonic's
/// [`Status::from_header_map`], except that a `grpc-status-details-bin` that
/// is not base64 is left out rather than let through to tonic, which panics
/// on it. Whatever answers at a node's address (a node of a learner's own
/// making, say) must not be able to end a request with a reset stream in
/// place of its status.
fn status_in(headers: &http::HeaderMap) -> Option<Status> {
    use base64::{
        Engine,
        alphabet::STANDARD,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    /// How tonic reads the details (its `util::base64::STANDARD`).
    const TONICS: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    const DETAILS: &str = "grpc-status-details-bin";
    // Most response heads carry no status: one lookup, as tonic's own.
    headers.get("grpc-status")?;
    match headers.get(DETAILS) {
        Some(details) if TONICS.decode(details.as_bytes()).is_err() => {
            let mut headers = headers.clone();
            headers.remove(DETAILS);
            Status::from_header_map(&headers)
        }
        _ => Status::from_header_map(headers),
    }
}

impl tower::Service<http::Request<Body>> for Http2 {
    type Response = http::Response<ResponseBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.sender
            .poll_ready(cx)
            .map_err(|e| Self::failure(&self.addr, e, self.plaintext, &self.state))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The handle that was polled ready sends; a fresh clone stays behind.
        let fresh = self.sender.clone();
        let mut sender = std::mem::replace(&mut self.sender, fresh);
        let addr = self.addr.clone();
        let plaintext = self.plaintext;
        let state = self.state.clone();
        Box::pin(async move {
            let h2_failure = |e| Self::failure(&addr, e, plaintext, &state);
            let (head, body) = request.into_parts();
            // One encoded message: tonic's unary body is ready at once.
            let body = body.collect().await?.to_bytes();
            let empty = body.is_empty();
            let (response, mut stream) = sender
                .send_request(http::Request::from_parts(head, ()), empty)
                .map_err(h2_failure)?;
            if !empty {
                stream.send_data(body, true).map_err(h2_failure)?;
            }
            let response = response.await.map_err(h2_failure)?;
            Self::answered(&state);
            Ok(response.map(|body| ResponseBody { body, addr, state }))
        })
    }
}

/// A response body arriving from a node.
#[derive(Debug)]
pub struct ResponseBody {
    body: h2::RecvStream,
    addr: Arc<str>,
    /// The connection's [`Http2::state`], to tell a hung node from a cut one.
    state: Arc<AtomicU8>,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(data) = ready!(this.body.poll_data(cx)) {
            // The node has answered, so a failure now is no TLS mismatch.
            let failure = |e| Http2::failure(&this.addr, e, false, &this.state);
            let data = data.map_err(failure)?;
            // The bytes are ours now: let the node send more.
            let _ = this.body.flow_control().release_capacity(data.len());
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match ready!(this.body.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Http2::failure(&this.addr, e, false, &this.state)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// An HTTP/2 error as a status. A node refusing or resetting one request (an
/// error code for that stream alone) is worth a retry elsewhere; anything else,
/// such as an I/O error or a GOAWAY, means the connection is broken or closing,
/// so it is a connection failure and the node is ejected at once. A GOAWAY
/// without an error is a node shutting down gracefully
/// ([`is_shutting_down`]), and the failure says so.
///
/// `maybe_tls`: over plaintext, a connection that breaks before the node
/// ever answered is most likely a TLS node hanging up on an HTTP/2 preface it
/// cannot read, and the failure says so.
fn h2_failure(addr: &str, e: h2::Error, maybe_tls: bool) -> Status {
    if is_goodbye(&e) {
        shutting_down(addr)
    } else if is_worn_out(&e) {
        worn_out(addr)
    } else if e.reason().is_some() && !e.is_go_away() && !e.is_io() {
        Status::unavailable(format!("{addr} refused or reset the request: {e}"))
    } else if maybe_tls && closed_during_setup(&e) {
        // Not the error's own words, which vary (a reset, a broken pipe) from
        // one health check to the next: the same reason is logged only once.
        connection_failed(format!(
            "{addr} closed the connection before answering; it probably requires TLS (the \
             default), which this balancer's --tls plaintext cannot speak"
        ))
    } else if maybe_tls {
        connection_failed(format!(
            "lost the connection to {addr}: {e}; if the node requires TLS (the default), \
             this balancer's --tls plaintext cannot talk to it"
        ))
    } else {
        connection_failed(format!(
            "lost the connection to {addr}: {}",
            how_it_broke(&e)
        ))
    }
}

/// Whether the node hung up (see [`certs::explain::closed_during_setup`]).
/// h2's own error hides an I/O error from `source()`: it is asked for it.
fn closed_during_setup(e: &h2::Error) -> bool {
    let closed = certs::explain::closed_during_setup;
    closed(e) || e.get_io().is_some_and(|io| closed(io))
}

/// A broken connection's error, in a learner's words (see [`cut`]).
fn how_it_broke(e: &h2::Error) -> String {
    match e.get_io().and_then(cut) {
        Some(words) => words.to_string(),
        None => e.to_string(),
    }
}

/// The words for an I/O error that means the other end vanished. A node
/// killed mid-way shows as rustls's "peer closed connection without sending
/// TLS close_notify: (a link to the rustls manual)" or as the kernel's "connection reset
/// by peer", whichever comes first: both mean the same, said one way.
fn cut(io: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind::*;
    matches!(
        io.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
    .then_some("it was cut (the node's process died, or the network between us failed)")
}

/// Whether `e` is the node's GOAWAY without an error: it is shutting down.
fn is_goodbye(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR)
}

/// Why a connection the balancer closed itself went: see [`is_worn_out`].
const WORN_OUT: &str = "the balancer closed its connection: h2 had reset 1024 answers on it \
    that came after their requests were given up on (more than 4096 given up on within a \
    second), its limit for one connection";

/// [`WORN_OUT`]'s cause alone, for the connection's log line.
const WORN_OUT_SHORT: &str = "1024 answers reset that came after their requests were given up on";

/// Whether `e` is h2's own GOAWAY for the resets it made itself, past its
/// limit over the connection's life ("too_many_internal_resets"). Each was an
/// answer that came for a request given up on (a deadline run out, a client
/// gone) more than [`certs::dial::RESETS_REMEMBERED`] resets after it: a node
/// slowed by a latency fault under a heavy load with short deadlines does
/// that, and is no more broken than before. The balancer closed the
/// connection, not the node: the node is not ejected, and the next request
/// dials a new connection.
fn is_worn_out(e: &h2::Error) -> bool {
    is_calmed_down(e) && e.to_string().contains("too_many_internal_resets")
}

/// Whether h2 closed the connection itself for a limit of its own
/// (ENHANCE_YOUR_CALM): too many of its own resets ([`is_worn_out`]), or
/// another (too many small DATA frames from the node, headers too large).
/// The connection's own error says no more; its requests' errors say which.
fn is_calmed_down(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_library() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
}

/// The connection failure of a request on a connection the balancer closed,
/// worn out by late answers.
pub(crate) fn worn_out(addr: &str) -> Status {
    failed(
        format!("{addr}: {WORN_OUT}; the node stays in rotation"),
        Failure::WornOut,
    )
}

/// The connection failure of a request to a node shutting down.
pub(crate) fn shutting_down(addr: &str) -> Status {
    failed(
        format!(
            "{addr} is shutting down: it sent GOAWAY, so it takes no new requests and \
             finishes those it has"
        ),
        Failure::ShuttingDown,
    )
}

/// The node could not be reached, or its connection broke under a request.
/// Carried as the source of an UNAVAILABLE status, so that the forwarding code
/// can tell "this node is gone" (eject it now) from "this node said no".
#[derive(Debug)]
pub struct ConnectionFailed {
    status: Status,
    how: Failure,
}

/// How a node's connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// It could not be made, or it broke: refused, reset, closed.
    Broke,
    /// The node stopped answering (a ping went unanswered) rather than
    /// hanging up: it may still be alive, and may yet act on what it was sent.
    Hung,
    /// The node said it is going away (GOAWAY, no error): it takes no new
    /// requests, and answers those it has before it closes the connection.
    ShuttingDown,
    /// The balancer closed the connection, worn out by its own resets of
    /// late answers ([`is_worn_out`]): no failure of the node's.
    WornOut,
}

impl fmt::Display for ConnectionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status.message())
    }
}

impl Error for ConnectionFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.status)
    }
}

/// An UNAVAILABLE status marked as a connection failure: `message` says
/// whether the node could not be reached or its connection broke.
fn connection_failed(message: String) -> Status {
    failed(message, Failure::Broke)
}

/// An UNAVAILABLE status with `message`, marked as a connection failure of
/// the kind `how`.
fn failed(message: String, how: Failure) -> Status {
    let status = Status::unavailable(message);
    // `from_error` finds the status in the chain and keeps the chain as its source.
    Status::from_error(Box::new(ConnectionFailed { status, how }))
}

/// The connection failure of a request whose node stopped answering pings.
fn hung(addr: &str, timeout: Duration) -> Status {
    failed(
        format!(
            "lost the connection to {addr}: it stopped answering (no answer to a ping within \
             {timeout:?})"
        ),
        Failure::Hung,
    )
}

/// Whether a request failed because its node stopped answering while it
/// waited: a node that hangs (SIGSTOP, a long pause) may still act on the
/// request when it wakes, unlike one whose connection was refused or reset.
pub fn is_hung(status: &Status) -> bool {
    connection_failure(status).is_some_and(|failed| failed.how == Failure::Hung)
}

/// Whether a request failed because its node is shutting down gracefully: it
/// sent GOAWAY, and took no new requests after it. The node did not fail; the
/// requests it took before it are still being answered.
pub fn is_shutting_down(status: &Status) -> bool {
    connection_failure(status).is_some_and(|failed| failed.how == Failure::ShuttingDown)
}

/// Whether a request failed because the balancer closed a connection worn
/// out by late answers (h2's own GOAWAY, once it has reset 1024 answers that
/// came for requests given up on): worth a try elsewhere, and no failure of
/// the node's.
pub fn is_worn_out_connection(status: &Status) -> bool {
    connection_failure(status).is_some_and(|failed| failed.how == Failure::WornOut)
}

/// Did `status` come from a failed connection rather than from the node?
pub fn is_connection_failure(status: &Status) -> bool {
    let mut next = Error::source(status);
    while let Some(e) = next {
        if e.is::<ConnectionFailed>() || e.is::<std::io::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The [`ConnectionFailed`] in a status's chain of causes, if any.
fn connection_failure(status: &Status) -> Option<&ConnectionFailed> {
    let mut next = Error::source(status);
    while let Some(e) = next {
        if let Some(failed) = e.downcast_ref::<ConnectionFailed>() {
            return Some(failed);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's status is read whatever its details header holds: details
    /// that are base64 are kept, and ones that are not are left out, where
    /// tonic's own parse panicked (and the client saw its stream reset).
    #[test]
    fn a_status_with_details_that_are_not_base64_is_read_without_them() {
        let trailers = |details: &'static str| {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "13".parse().unwrap());
            trailers.insert("grpc-message", "disk%20failed".parse().unwrap());
            trailers.insert("grpc-status-details-bin", details.parse().unwrap());
            trailers
        };
        let status = status_in(&trailers("not base64!")).unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "disk failed");
        assert!(status.details().is_empty());
        // Both paddings, as tonic reads them.
        for details in ["aGk=", "aGk"] {
            let status = status_in(&trailers(details)).unwrap();
            assert_eq!(status.details(), b"hi", "{details}");
        }
        assert!(status_in(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn a_connection_failure_is_unavailable_and_recognised() {
        let status = connection_failed("cannot reach 127.0.0.1:1: connection refused".into());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("connection refused"), "{status}");
        assert!(is_connection_failure(&status));
        assert!(!is_connection_failure(&Status::unavailable("quorum")));
    }

    /// However the node vanished, the reason reads the same.
    #[test]
    fn a_connection_cut_reads_the_same_however_it_was_cut() {
        use std::io::{Error, ErrorKind};
        let eof = Error::new(
            ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/rustls",
        );
        let reset = Error::from(ErrorKind::ConnectionReset);
        assert_eq!(cut(&eof), cut(&reset));
        assert!(cut(&eof).is_some_and(|words| words.contains("process died")));
        assert_eq!(cut(&Error::other("certificate expired")), None);
    }

    /// Requests that queued behind a dial that failed (a node killed, its
    /// address silent) share its failure and go elsewhere, instead of each
    /// dialing again for up to the connect timeout, one after another.
    #[tokio::test]
    async fn requests_that_waited_for_a_dial_that_failed_share_its_failure() {
        use std::sync::atomic::AtomicUsize;
        // Takes connections and never answers: each TLS handshake waits out
        // the connect timeout. It counts the dials.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dials = Arc::new(AtomicUsize::new(0));
        let counted = dials.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        });
        let tls = rustls::ClientConfig::builder_with_provider(certs::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut dialer = Dialer::new(Some(Arc::new(tls)));
        dialer.connect_timeout = Duration::from_millis(200);
        let node = NodeConnection::new(&addr, dialer).unwrap();
        let (a, b, c) = tokio::join!(node.ready(), node.ready(), node.ready());
        for failed in [a, b, c] {
            let failure = failed.expect_err("nothing answers");
            assert!(is_connection_failure(&failure), "{failure}");
        }
        assert_eq!(
            dials.load(Ordering::Relaxed),
            1,
            "one dial, its failure shared"
        );
        // A request that comes after the failure dials again.
        assert!(node.ready().await.is_err());
        assert_eq!(dials.load(Ordering::Relaxed), 2);
    }

    /// The other side, a broken connection, is the killed-node test in
    /// tests/tests/balancer.rs: h2 does not let us make its I/O errors here.
    #[test]
    fn a_refused_request_is_retried_elsewhere_but_does_not_eject_the_node() {
        let refused = h2_failure(
            "node-1:7100",
            h2::Error::from(h2::Reason::REFUSED_STREAM),
            false,
        );
        assert_eq!(refused.code(), tonic::Code::Unavailable, "worth a retry");
        assert!(!is_connection_failure(&refused), "{refused}");
        assert!(refused.message().contains("node-1:7100"), "{refused}");
    }

    /// A health check waiting on a node that hangs (SIGSTOP) fails, when the
    /// keepalive gives up on the connection, as a node that stopped
    /// answering: not as one whose process died, which is what dropping the
    /// connection looks like underneath. (Real time: 10 s to the ping, 5 s
    /// for its answer.)
    #[tokio::test]
    async fn a_health_check_on_a_node_that_hangs_says_it_stopped_answering() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (got_request, request_arrived) = tokio::sync::oneshot::channel();
        // The node takes one request and then stops: nothing polls its
        // connection, so neither the request nor a ping is ever answered.
        let node = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            let request = connection.accept().await.unwrap().unwrap();
            got_request.send(()).unwrap();
            std::future::pending::<()>().await;
            drop((connection, request));
        });
        let connection = NodeConnection::new(&addr, Dialer::new(None)).unwrap();
        let http2 = connection.ready().await.unwrap();
        let mut health =
            tonic_health::pb::health_client::HealthClient::with_origin(http2, connection.origin());
        let check = health.check(tonic_health::pb::HealthCheckRequest::default());
        let within = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + Duration::from_secs(15);
        let status = tokio::time::timeout(within, check)
            .await
            .expect("the keepalive gives up on the connection")
            .unwrap_err();
        request_arrived.await.expect("the check reached the node");
        assert!(is_hung(&status), "{status:?}");
        assert!(
            status
                .message()
                .contains("it stopped answering (no answer to a ping"),
            "{status}"
        );
        node.abort();
    }

    /// A connection that has given out its share of stream numbers is
    /// retired: the next request dials a new one, and requests on the old
    /// one still get their answers.
    #[tokio::test]
    async fn a_connection_whose_stream_numbers_run_out_is_dialed_again() {
        use std::sync::atomic::AtomicUsize;
        // A node that counts its connections and answers every request
        // with HTTP 200 and an empty body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dials = Arc::new(AtomicUsize::new(0));
        let counted = dials.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(socket).await.unwrap();
                    while let Some(Ok((_, mut respond))) = connection.accept().await {
                        let ok = http::Response::new(());
                        let _ = respond.send_response(ok, true);
                    }
                });
            }
        });
        let mut connection = NodeConnection::new(&addr, Dialer::new(None)).unwrap();
        connection.streams_per_connection = 3;
        // Answered, so the node has taken the connection by then.
        let answered = |mut http2: Http2| {
            let request = http::Request::post(connection.origin())
                .body(Body::empty())
                .unwrap();
            async move {
                let response = tower::ServiceExt::oneshot(&mut http2, request).await;
                assert_eq!(response.unwrap().status(), http::StatusCode::OK);
            }
        };
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(connection.ready().await.unwrap());
        }
        answered(first.pop().unwrap()).await;
        assert_eq!(dials.load(Ordering::Relaxed), 1);
        answered(connection.ready().await.unwrap()).await;
        assert_eq!(dials.load(Ordering::Relaxed), 2, "the fourth handle dials");
        // The old connection still answers the handles given out on it.
        for http2 in first {
            answered(http2).await;
        }
    }

    /// A `Get` of an empty message on `connection`, dialed if need be.
    async fn get(connection: &NodeConnection) -> Result<Answer, Status> {
        let path = PathAndQuery::from_static("/clusterlab.v1.KeyValue/Get");
        let message = Bytes::from_static(&[0; 5]);
        let http2 = connection.ready().await?;
        http2.unary(path, HeaderMap::new(), message).await
    }

    /// Requests given up on (a client's reset, a deadline) whose answers
    /// were already on their way do not use up the connection: h2 remembers
    /// 50 reset streams for a second, resets each later one's answer itself,
    /// and counted those resets for good, closing the connection at 1024
    /// (ENHANCE_YOUR_CALM) and failing every request on it. Under a latency
    /// fault, with deadlines running out as the node's answers come, that
    /// took a node out of rotation as a lost connection, again and again.
    #[tokio::test]
    async fn answers_to_requests_given_up_on_do_not_close_the_connection() {
        let node = certs::testing::LateServer::start().await;
        let connection = NodeConnection::new(&node.addr, Dialer::new(None)).unwrap();
        let send = || get(&connection);
        certs::testing::give_up_in_batches(send).await;
        // The connection still carries requests: one waited for is answered
        // (an OK without a message, as this node answers), on the first dial.
        let answered = send().await.expect_err("this node sends no message");
        assert_eq!(answered.code(), tonic::Code::Internal, "{answered:?}");
        assert!(
            answered
                .message()
                .ends_with("answered OK without a message"),
            "{answered:?}"
        );
        assert_eq!(connection.dials(), 1, "the connection was closed");
    }

    /// Past the resets it remembers, h2 resets each late answer itself, and
    /// at the 1024th closes the connection (its own GOAWAY): a request on
    /// it then fails as one on a connection the balancer closed, not as a
    /// node lost, and the next request dials a new connection.
    #[tokio::test]
    async fn a_connection_worn_out_by_late_answers_is_dialed_again_without_blame() {
        let (logged, _logging) = certs::testing::captured();
        let node = certs::testing::LateServer::start().await;
        let mut connection = NodeConnection::new(&node.addr, Dialer::new(None)).unwrap();
        // h2's own default: worn out after about five batches, not fifty.
        connection.resets_remembered = 50;
        let send = || get(&connection);
        let answered_as_this_node_answers = |status: &Status| {
            status.code() == tonic::Code::Internal
                && status.message().ends_with("answered OK without a message")
        };
        let mut worn_out = None;
        for _ in 0..20 {
            // 200 requests given up on: their answers come 100 ms after them.
            let batch: Vec<_> = (0..200).map(|_| send()).collect();
            let given_up = Duration::from_millis(20);
            let batch = tokio::time::timeout(given_up, futures::future::join_all(batch));
            assert!(
                batch.await.is_err(),
                "a batch ended before it was given up on"
            );
            // One sent after them and waited for, in flight as their answers come.
            let waited_for = send().await.expect_err("this node sends no message");
            if !answered_as_this_node_answers(&waited_for) {
                worn_out = Some(waited_for);
                break;
            }
        }
        let worn_out = worn_out.expect("the connection outlasted 4,000 late answers");
        assert!(is_worn_out_connection(&worn_out), "{worn_out:?}");
        assert!(!is_shutting_down(&worn_out) && !is_hung(&worn_out));
        assert!(
            worn_out
                .message()
                .contains("the balancer closed its connection"),
            "{worn_out:?}"
        );
        // A new connection is dialed. (The request's failure marks the old
        // one ended, for when its task has not ended yet, its GOAWAY still
        // to be written to a full socket; here the task ends first.)
        assert_eq!(connection.dials(), 1);
        let answered = send().await.expect_err("this node sends no message");
        assert!(answered_as_this_node_answers(&answered), "{answered:?}");
        assert_eq!(connection.dials(), 2, "a new connection is dialed");
        // And the log says the balancer closed it, not the node.
        let said = "closed the connection to the node for one of h2's own limits \
                    (ENHANCE_YOUR_CALM; most often 1024 answers reset";
        let deadline = Instant::now() + Duration::from_secs(10);
        while !logged.text().contains(said) {
            assert!(Instant::now() < deadline, "not logged:\n{}", logged.text());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A "node" that answers OK in its headers alone sent no message: that
    /// is a failure (INTERNAL, as an OK with an empty body is), not an OK
    /// passed on to a client that then has nothing to read.
    #[tokio::test]
    async fn an_ok_in_headers_alone_is_an_answer_without_a_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                let ok = certs::testing::ok_in_headers_alone();
                let _ = respond.send_response(ok, true);
            }
        });
        let connection = NodeConnection::new(&addr, Dialer::new(None)).unwrap();
        let http2 = connection.ready().await.unwrap();
        let path = PathAndQuery::from_static("/clusterlab.v1.KeyValue/Get");
        let answer = http2.unary(path, HeaderMap::new(), Bytes::from_static(&[0; 5]));
        let Err(failure) = answer.await else {
            panic!("no message, and yet an answer");
        };
        assert_eq!(failure.code(), tonic::Code::Internal, "{failure:?}");
        assert!(
            failure.message().ends_with("answered OK without a message"),
            "{failure:?}"
        );
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        let dialer = Dialer::new(None);
        assert!(NodeConnection::new("node-1:7100", dialer.clone()).is_ok());
        let err = NodeConnection::new("node-1", dialer).unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
