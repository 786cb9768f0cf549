//! The event feed: what happened in this process, for `clusterlab events`.
//!
//! Every notable thing (a member dying, a backend ejected, a repair finishing) is
//! logged *and* published here. Subscribers get the recent history first, then
//! the live feed. The history and the channel are bounded: a slow subscriber
//! misses events (and is told how many) rather than making the process hoard memory.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::{
    StreamExt,
    wrappers::{BroadcastStream, errors::BroadcastStreamRecvError},
};

/// The `Admin.Events` answer: events as a gRPC server stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, tonic::Status>> + Send>>;

/// How many past events a new subscriber receives.
const HISTORY: usize = 256;
/// How far a subscriber may fall behind the live feed before it skips events.
const CHANNEL_CAPACITY: usize = 1024;

/// Publishes events to any number of subscribers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    source: String,
    /// A std mutex: held only to push or copy, never across an `.await`.
    history: Arc<Mutex<VecDeque<proto::Event>>>,
    live: broadcast::Sender<proto::Event>,
}

impl Events {
    /// A feed whose events name `source` (this process) as where they happened.
    pub fn new(source: impl Into<String>) -> Self {
        Events {
            source: source.into(),
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))),
            live: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    /// Publishes an event. `kind` is short and dotted ("member.dead"); `message`
    /// is a sentence for people. The caller logs it too, with its own fields.
    pub fn publish(&self, kind: &str, subject: &str, message: impl Into<String>) {
        let event = proto::Event {
            at_unix_ms: crate::version::unix_ms(),
            source: self.source.clone(),
            kind: kind.to_string(),
            subject: subject.to_string(),
            message: message.into(),
        };
        let mut history = self.history.lock().expect("event history poisoned");
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // Sending fails only when nobody is subscribed, which is fine.
        let _ = self.live.send(event);
    }

    /// The recent history and then, unless `history_only`, the live feed, as
    /// `Admin.Events` sends it. Node and balancer both serve their feed this way.
    pub fn stream(&self, history_only: bool) -> EventStream {
        let (history, live) = self.subscribe();
        let history = tokio_stream::iter(history.into_iter().map(Ok));
        if history_only {
            return Box::pin(history);
        }
        let source = self.source.clone();
        let live = BroadcastStream::new(live).map(move |item| match item {
            Ok(event) => Ok(event),
            // The subscriber fell behind: say so in the feed instead of failing it.
            Err(BroadcastStreamRecvError::Lagged(missed)) => Ok(proto::Event {
                source: source.clone(),
                kind: "events.missed".into(),
                message: format!(
                    "{missed} events were dropped because this subscriber fell behind"
                ),
                ..proto::Event::default()
            }),
        });
        Box::pin(history.chain(live))
    }

    /// The recent history, oldest first.
    pub fn recent(&self) -> Vec<proto::Event> {
        let history = self.history.lock().expect("event history poisoned");
        history.iter().cloned().collect()
    }

    /// The recent history, then a receiver for what happens next. Taken under
    /// one lock so no event falls between the two.
    pub fn subscribe(&self) -> (Vec<proto::Event>, broadcast::Receiver<proto::Event>) {
        let history = self.history.lock().expect("event history poisoned");
        (history.iter().cloned().collect(), self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_history_then_live_events() {
        let events = Events::new("n1");
        events.publish("node.started", "n1", "started");
        let (history, mut live) = events.subscribe();
        assert_eq!(history.len(), 1);
        events.publish("member.dead", "n2", "n2 is dead");
        let next = live.recv().await.unwrap();
        assert_eq!(
            (next.kind.as_str(), next.subject.as_str()),
            ("member.dead", "n2")
        );
    }

    #[test]
    fn history_is_bounded() {
        let events = Events::new("n1");
        for i in 0..HISTORY + 10 {
            events.publish("test", &i.to_string(), "");
        }
        let (history, _) = events.subscribe();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].subject, "10");
    }
}
