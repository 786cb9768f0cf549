//! The event feed: what happened in this process, for `clusterlab events`.
//!
//! Every notable thing (a member dying, a backend ejected, a repair finishing) is
//! logged *and* published here. Subscribers get the recent history first, then
//! the live feed. The history and the channel are bounded: a slow subscriber
//! misses events (and is told how many) rather than making the process hoard memory.
//!
//! A live feed never ends by itself, so when the process starts shutting down
//! it publishes a last event, [`STOPPING`], and every feed ends after it. A
//! follower (`clusterlab events`) sees why its feed ended, and does not hold
//! up the drain until its deadline.

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

/// The kind of a feed's last event: the process is shutting down.
pub const STOPPING: &str = "process.stopping";

/// How many past events a new subscriber receives.
const HISTORY: usize = 256;
/// How far a subscriber may fall behind the live feed before it skips events.
const CHANNEL_CAPACITY: usize = 1024;

/// Publishes events to any number of subscribers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    source: String,
    /// A std mutex: held only to push or copy, never across an `.await`.
    feed: Arc<Mutex<Feed>>,
    live: broadcast::Sender<proto::Event>,
}

/// What the lock guards: the history, and whether [`STOPPING`] was sent.
#[derive(Debug)]
struct Feed {
    history: VecDeque<proto::Event>,
    closed: bool,
}

impl Events {
    /// A feed whose events name `source` (this process) as where they happened.
    pub fn new(source: impl Into<String>) -> Self {
        Events {
            source: source.into(),
            feed: Arc::new(Mutex::new(Feed {
                history: VecDeque::with_capacity(HISTORY),
                closed: false,
            })),
            live: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    /// Publishes an event. `kind` is short and dotted ("member.dead"); `message`
    /// is a sentence for people. The caller logs it too, with its own fields.
    pub fn publish(&self, kind: &str, subject: &str, message: impl Into<String>) {
        let mut feed = self.feed.lock().expect("event history poisoned");
        self.push(&mut feed, kind, subject, message.into());
    }

    /// Publishes [`STOPPING`], the last event of every live feed: each ends
    /// after it, and a feed opened from now on sends the history alone.
    /// Called once shutdown begins.
    pub fn close(&self) {
        let mut feed = self.feed.lock().expect("event history poisoned");
        if feed.closed {
            return;
        }
        let message = format!("{} is shutting down; this feed ends here", self.source);
        self.push(&mut feed, STOPPING, &self.source, message);
        feed.closed = true;
    }

    /// Adds an event to the history and sends it live, under the lock, so that
    /// [`Events::subscribe`] sees each event in exactly one of the two.
    ///
    /// Nothing is sent live after [`STOPPING`]: every live feed ends with it,
    /// so it stays the newest event in the channel, and a subscriber that fell
    /// behind still reaches it instead of waiting out the drain.
    fn push(&self, feed: &mut Feed, kind: &str, subject: &str, message: String) {
        let event = proto::Event {
            at_unix_ms: crate::version::unix_ms(),
            source: self.source.clone(),
            kind: kind.to_string(),
            subject: subject.to_string(),
            message,
        };
        if feed.history.len() == HISTORY {
            feed.history.pop_front();
        }
        if feed.closed {
            feed.history.push_back(event);
            return;
        }
        feed.history.push_back(event.clone());
        // Sending fails only when nobody is subscribed, which is fine.
        let _ = self.live.send(event);
    }

    /// The recent history and then, unless `history_only`, the live feed, as
    /// `Admin.Events` sends it. Node and balancer both serve their feed this way.
    pub fn stream(&self, history_only: bool) -> EventStream {
        let (history, live, closed) = self.subscribe_feed();
        let history = tokio_stream::iter(history.into_iter().map(Ok));
        if history_only || closed {
            return Box::pin(history);
        }
        let source = self.source.clone();
        let live = BroadcastStream::new(live).map(move |item| match item {
            Ok(event) => Ok(event),
            // The subscriber fell behind: say so in the feed instead of failing it.
            Err(BroadcastStreamRecvError::Lagged(missed)) => Ok(proto::Event {
                at_unix_ms: crate::version::unix_ms(),
                source: source.clone(),
                kind: "events.missed".into(),
                subject: source.clone(),
                message: format!(
                    "{missed} events were dropped because this subscriber fell behind"
                ),
            }),
        });
        // Up to and including STOPPING, then the end of the stream, at once:
        // not at the next event, which may never come.
        let live = futures::stream::unfold((live, false), |(mut live, ended)| async move {
            if ended {
                return None;
            }
            let item = live.next().await?;
            let ended = item.as_ref().is_ok_and(|event| event.kind == STOPPING);
            Some((item, (live, ended)))
        });
        Box::pin(history.chain(live))
    }

    /// The recent history, oldest first.
    pub fn recent(&self) -> Vec<proto::Event> {
        let feed = self.feed.lock().expect("event history poisoned");
        feed.history.iter().cloned().collect()
    }

    /// The recent history, then a receiver for what happens next. Taken under
    /// one lock so no event falls between the two.
    pub fn subscribe(&self) -> (Vec<proto::Event>, broadcast::Receiver<proto::Event>) {
        let (history, live, _) = self.subscribe_feed();
        (history, live)
    }

    /// [`Events::subscribe`], and whether the feed has closed.
    fn subscribe_feed(&self) -> (Vec<proto::Event>, broadcast::Receiver<proto::Event>, bool) {
        let feed = self.feed.lock().expect("event history poisoned");
        let history = feed.history.iter().cloned().collect();
        (history, self.live.subscribe(), feed.closed)
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

    /// Closing ends every live feed after its last event, and a feed opened
    /// later sends the history alone: nothing holds up a shutdown.
    #[tokio::test]
    async fn closing_ends_every_feed_after_its_last_event() {
        use tokio_stream::StreamExt;
        let events = Events::new("n1");
        events.publish("node.started", "n1", "started");
        let open = events.stream(false);
        events.close();
        // Each feed must end by itself; the deadline only bounds a failure.
        let kinds = |stream: EventStream| async move {
            let all = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.collect::<Vec<_>>(),
            );
            let all = all.await.expect("the feed did not end");
            all.into_iter().map(|e| e.unwrap().kind).collect::<Vec<_>>()
        };
        // It ends right after STOPPING, with nothing published since.
        assert_eq!(kinds(open).await, ["node.started", STOPPING]);
        events.publish("member.dead", "n2", "published while draining");
        let later = events.stream(false);
        assert_eq!(
            kinds(later).await,
            ["node.started", STOPPING, "member.dead"]
        );
        let last = &events.recent()[1];
        assert_eq!(last.message, "n1 is shutting down; this feed ends here");
        events.close();
        assert_eq!(events.recent().len(), 3, "closing twice says it once");
    }

    /// A subscriber that fell far behind still gets STOPPING and ends, however
    /// much is published while the process drains.
    #[tokio::test]
    async fn a_lagging_feed_still_ends_at_stopping() {
        use tokio_stream::StreamExt;
        let events = Events::new("n1");
        let open = events.stream(false);
        let burst = |tag: &str| {
            for i in 0..CHANNEL_CAPACITY * 2 {
                events.publish("test", &format!("{tag}{i}"), "");
            }
        };
        burst("before");
        events.close();
        burst("draining");
        let all =
            tokio::time::timeout(std::time::Duration::from_secs(10), open.collect::<Vec<_>>());
        let all = all.await.expect("the lagging feed did not end");
        let all: Vec<proto::Event> = all.into_iter().map(Result::unwrap).collect();
        // Dated and named like every other event (not 1970, not nobody's).
        let missed = &all[0];
        assert!(
            missed.at_unix_ms >= all[1].at_unix_ms && missed.subject == "n1",
            "{missed:?}"
        );
        let kinds: Vec<_> = all.into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds.first().map(String::as_str), Some("events.missed"));
        assert_eq!(kinds.last().map(String::as_str), Some(STOPPING));
        assert_eq!(
            kinds.len(),
            1 + CHANNEL_CAPACITY,
            "the missed note, then the channel"
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
