//! A deadline for a call's message, on the calls that have no other: health
//! checks, `Admin`, reflection.
//!
//! `KeyValue` ends every call at `--request-timeout` ([`crate::kv`], and the
//! balancer's forwarder). The other services had only the client's deadline,
//! if it sent one: a client that opened a health check and never finished
//! its message held a stream for as long as it kept its connection, and a
//! drain waited for it until its own deadline. Every identity of the cluster
//! may call them, a `reader` too.
//!
//! So the request's messages must all have arrived by the sooner of the
//! client's deadline (`grpc-timeout`) and `--request-timeout`, counted from
//! the request's headers; else the call ends with DEADLINE_EXCEEDED, which
//! the body hands to tonic as its error. Only the request is bounded: an
//! answer that streams on (`Admin/Events`, `Health/Watch`) goes on once its
//! one message has arrived. Reflection's stream of questions may last as
//! long as its client asks ([`MessageDeadline::between_messages`]): each
//! part of it is due within the time of the one before, and a stream whose
//! next question does not come ends (reflection ends it with OK).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tonic::{Status, codegen::Bytes, server::NamedService};
use tower::Service;

/// `inner` with each request's messages due by a deadline (see the module).
#[derive(Debug, Clone)]
pub struct MessageDeadline<S> {
    inner: S,
    /// Who gives up, as messages name it: the node's or balancer's name.
    process: Arc<str>,
    request_timeout: Duration,
    /// Each part of the request is due within the time of the one before,
    /// not the whole of it within the time of its headers.
    between: bool,
}

impl<S> MessageDeadline<S> {
    /// `inner`, its requests' messages due within `request_timeout` (or the
    /// client's sooner deadline); `process` names who gave up.
    pub fn new(inner: S, process: &str, request_timeout: Duration) -> Self {
        MessageDeadline {
            inner,
            process: process.into(),
            request_timeout,
            between: false,
        }
    }

    /// `inner`, for a stream of messages (reflection's questions): each part
    /// due within `request_timeout` of the one before.
    pub fn between_messages(inner: S, process: &str, request_timeout: Duration) -> Self {
        MessageDeadline {
            between: true,
            ..MessageDeadline::new(inner, process, request_timeout)
        }
    }
}

impl<S: NamedService> NamedService for MessageDeadline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for MessageDeadline<S>
where
    S: Service<http::Request<DueBody<B>>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let theirs = proto::deadline::of(request.headers());
        let (within, ours) = proto::deadline::sooner(theirs, self.request_timeout);
        let whose = match ours {
            true => "its --request-timeout",
            false => "the client's deadline",
        };
        let what = match self.between {
            true => "its next message had not arrived",
            false => "its message had not arrived",
        };
        let gave_up = format!(
            "{} gave up on the call after {within:?} ({whose}): {what}",
            self.process
        );
        self.inner.call(request.map(|body| DueBody {
            body,
            due: Box::pin(tokio::time::sleep(within)),
            again_within: self.between.then_some(within),
            gave_up: Some(gave_up),
        }))
    }
}

/// A request body whose frames must all have come by `due`.
#[derive(Debug)]
pub struct DueBody<B> {
    body: B,
    due: Pin<Box<tokio::time::Sleep>>,
    /// For a stream of messages: each part puts `due` this far off again.
    again_within: Option<Duration>,
    /// What the call ends with when `due` passes first; taken once said.
    gave_up: Option<String>,
}

impl<B> Body for DueBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            if let Some(within) = this.again_within {
                this.due
                    .as_mut()
                    .reset(tokio::time::Instant::now() + within);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.due.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // tonic answers with a body's error as it is, when it is a Status.
        Poll::Ready(
            this.gave_up
                .take()
                .map(|why| Err(Status::deadline_exceeded(why).into())),
        )
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
    use http_body_util::BodyExt;

    use super::*;

    /// A message that never comes ends at the deadline, as DEADLINE_EXCEEDED
    /// naming whose it was; one that came is read as it is.
    #[tokio::test(start_paused = true)]
    async fn a_message_that_never_comes_ends_at_the_deadline() {
        let echo = tower::service_fn(|request: http::Request<DueBody<_>>| async move {
            let read = request
                .into_body()
                .collect()
                .await
                .map(|all| all.to_bytes());
            Ok::<_, Infallible>(read.map_err(|e| e.downcast::<Status>().map(|s| *s)))
        });
        let mut service = MessageDeadline::new(echo, "n1", Duration::from_secs(3));
        let call = |body| http::Request::builder().body(body).unwrap();

        let came = http_body_util::Full::new(Bytes::from_static(b"message"));
        let came = came.map_err(|never: Infallible| match never {}).boxed();
        let read = service.call(call(came)).await.unwrap();
        assert_eq!(read.unwrap(), Bytes::from_static(b"message"));

        // A body that never ends, nor says anything.
        let silent = futures::stream::pending::<Result<Frame<Bytes>, Status>>();
        let never = http_body_util::StreamBody::new(silent).boxed();
        let read = service.call(call(never)).await.unwrap();
        let status = read.unwrap_err().unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "n1 gave up on the call after 3s (its --request-timeout): its message had not arrived"
        );

        // A stream of questions, each within 3 s of the one before, goes on
        // past 3 s; one that stops ends 3 s after its last (on the test's
        // paused clock, which moves only as timers fire).
        let (sender, questions) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(1);
        let questions = tokio_stream::wrappers::ReceiverStream::new(questions);
        let mut stream = MessageDeadline::between_messages(echo, "n1", Duration::from_secs(3));
        let asking = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                sender
                    .send(Ok(Frame::data(Bytes::from_static(b"?"))))
                    .await
                    .unwrap();
            }
            sender
        });
        let started = tokio::time::Instant::now();
        let body = http_body_util::StreamBody::new(questions).boxed();
        let status = stream.call(call(body)).await.unwrap().unwrap_err().unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(9), "{status:?}");
        assert!(
            status
                .message()
                .ends_with("its next message had not arrived")
        );
        drop(asking.await.unwrap());
    }
}
