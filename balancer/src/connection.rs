//! One HTTP/2 connection to a node, used without a tonic `Channel`.
//!
//! A `Channel` is a connection behind `tower::buffer`: every request is handed
//! to a worker task first, which passes it on to the connection's task. That is
//! what a client with many callers wants, but the balancer has its own policies
//! and its own retries, so it talks to hyper's HTTP/2 handle directly. A
//! forwarded request then goes from the handler's task straight to the
//! connection's task: one task hop (and one thread wake-up) less per request.
//!
//! The connection is made at the first request (or health check), shared by all
//! of them (HTTP/2 multiplexes), and made again the first time it is needed
//! after it broke. Every RPC to the node goes over it: forwarded requests,
//! health checks and `Admin.WhoAmI`, so a check also tests the connection that
//! carries the traffic.

use std::{
    error::Error,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use certs::dial::Dialer;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::{Status, body::Body};
use tracing::debug;

/// A node's connection: dialed when first needed, re-dialed after it breaks.
#[derive(Debug)]
pub struct NodeConnection {
    addr: String,
    host: String,
    port: u16,
    /// `http://host:port`: tonic's clients need it to fill in `:authority`.
    origin: http::Uri,
    dialer: Dialer,
    /// The live connection. A std lock, held only to clone the handle.
    current: std::sync::Mutex<Option<SendRequest<Body>>>,
    /// Held while dialing, so that a burst of requests makes one connection.
    dialing: tokio::sync::Mutex<()>,
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
            addr: addr.to_string(),
            host: host.to_string(),
            port,
            origin,
            dialer,
            current: std::sync::Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        })
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
        let _dialing = self.dialing.lock().await;
        // Someone else may have dialed while we waited.
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let sender = tokio::time::timeout(self.dialer.connect_timeout, self.dial())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no connection within {:?}",
                    self.dialer.connect_timeout
                ))
            })
            .map_err(|cause| connection_failed(&self.addr, cause))?;
        *self.current.lock().expect("connection poisoned") = Some(sender.clone());
        Ok(Http2(sender))
    }

    fn live(&self) -> Option<Http2> {
        let current = self.current.lock().expect("connection poisoned");
        current
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .map(|sender| Http2(sender.clone()))
    }

    async fn dial(&self) -> Result<SendRequest<Body>, String> {
        let (stream, _) = self
            .dialer
            .dial_stream(&self.host, self.port)
            .await
            .map_err(|e| match certs::explain::find_rustls_error(&e) {
                Some(tls) => certs::explain::failed_connection(tls),
                None => e.to_string(),
            })?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Notice a dead node on an idle connection within seconds.
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%addr, error = %e, "connection to node closed");
            }
        });
        Ok(sender)
    }
}

/// A clone of a connection's handle that tonic's generated clients can call.
#[derive(Debug, Clone)]
pub struct Http2(SendRequest<Body>);

impl tower::Service<http::Request<Body>> for Http2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| connection_failed("node", e.to_string()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = self.0.send_request(request);
        Box::pin(async move {
            response
                .await
                .map_err(|e| connection_failed("node", e.to_string()))
        })
    }
}

/// The node could not be reached, or its connection broke under a request.
/// Carried as the source of an UNAVAILABLE status, so that the forwarding code
/// can tell "this node is gone" (eject it now) from "this node said no".
#[derive(Debug)]
pub struct ConnectionFailed(Status);

impl fmt::Display for ConnectionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.message())
    }
}

impl Error for ConnectionFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// An UNAVAILABLE status marked as a connection failure.
fn connection_failed(addr: &str, cause: String) -> Status {
    let status = Status::unavailable(format!("cannot reach {addr}: {cause}"));
    // `from_error` finds the status in the chain and keeps the chain as its source.
    Status::from_error(Box::new(ConnectionFailed(status)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_failure_is_unavailable_and_recognised() {
        let status = connection_failed("127.0.0.1:1", "connection refused".into());
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("connection refused"), "{status}");
        assert!(is_connection_failure(&status));
        assert!(!is_connection_failure(&Status::unavailable("quorum")));
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        let dialer = Dialer::new(None);
        assert!(NodeConnection::new("node-1:7100", dialer.clone()).is_ok());
        let err = NodeConnection::new("node-1", dialer).unwrap_err();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
