//! Fault injection: make this node slow, flaky, frozen, or cut off from a peer,
//! on purpose, so a learner can watch the cluster cope.
//!
//! `clusterlab fault n2 --latency 200ms` sets a [`Fault`] through `Admin.SetFault`.
//! Every `KeyValue` and `Replica` request then passes [`Faults::enter`] first:
//! it waits while the node is paused, sleeps the added latency, and fails with
//! the configured probability. Calls to and from the dropped peer fail at once,
//! as if the network link between the two were cut. Membership probes pass a
//! pause and a cut link only ([`Faults::enter_probe`]). `Admin` itself is never
//! faulted, so a fault can always be cleared.

use std::time::Duration;

use proto::admin::MAX_FAULT_LATENCY;
use tokio::sync::watch;
use tonic::Status;

/// What is wrong with this node right now. The default is "nothing".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// Added before every request.
    pub latency: Duration,
    /// Fraction of requests, 0.0 to 1.0, that fail with UNAVAILABLE.
    pub error_rate: f64,
    /// Requests wait (hang) until the fault is cleared, or the node shuts
    /// down, which refuses them as not applied.
    pub pause: bool,
    /// The peer node we neither call nor answer.
    pub drop_peer: Option<String>,
}

impl Fault {
    /// Builds a fault from the wire request, checking its ranges.
    pub fn from_request(request: &proto::SetFaultRequest) -> Result<Self, Status> {
        if request.clear {
            // Sent with a fault, it is a mistake to name, not a fault to drop.
            let alone = proto::SetFaultRequest {
                node: request.node.clone(),
                clear: true,
                ..Default::default()
            };
            return match *request == alone {
                true => Ok(Fault::default()),
                false => Err(Status::invalid_argument(
                    "clear removes every fault, so it comes alone: send it with no latency, \
                     error rate, pause or peer (the node's name is fine), then the fault to \
                     set, if any",
                )),
            };
        }
        if !(0.0..=1.0).contains(&request.error_rate) {
            return Err(Status::invalid_argument(format!(
                "error rate {} is out of range; choose 0.0 to 1.0",
                request.error_rate
            )));
        }
        let latency = Duration::from_millis(request.latency_ms);
        if latency > MAX_FAULT_LATENCY {
            return Err(Status::invalid_argument(format!(
                "latency {latency:?} is more than {MAX_FAULT_LATENCY:?}; use --pause to stop answering"
            )));
        }
        Ok(Fault {
            latency,
            error_rate: request.error_rate,
            pause: request.pause,
            drop_peer: Some(request.drop_peer.clone()).filter(|p| !p.is_empty()),
        })
    }

    /// One line for people: "latency 200ms, error rate 0.3" or "none".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.latency.is_zero() {
            parts.push(format!("latency {:?}", self.latency));
        }
        if self.error_rate > 0.0 {
            // As given: 0.004 is not "0.00".
            parts.push(format!("error rate {}", self.error_rate));
        }
        if self.pause {
            parts.push("paused".to_string());
        }
        if let Some(peer) = &self.drop_peer {
            parts.push(format!("link to {peer} cut"));
        }
        match parts.is_empty() {
            true => "none".to_string(),
            false => parts.join(", "),
        }
    }
}

/// `rate` (0.0 to 1.0) as a percentage, to as many places as it was given:
/// 0.004 is 0.4, 0.00001 is 0.001 (rounded to two places, it was 0), and
/// 0.3 is 30, not 30.000000000000004. A rate too small for nine places is
/// not rounded to 0 (a request it failed was not failed by "0%").
fn percent(rate: f64) -> f64 {
    match (rate * 1e11).round() / 1e9 {
        0.0 if rate > 0.0 => rate * 100.0,
        rounded => rounded,
    }
}

/// The node's current fault, shared by every service. A watch channel, so that
/// paused requests wake up the moment the fault is cleared.
#[derive(Debug)]
pub struct Faults {
    current: watch::Sender<Fault>,
    /// Set when the node starts to shut down ([`Faults::close`]).
    stopping: watch::Sender<bool>,
    /// This node's name, for the command that clears its fault.
    node: String,
}

impl Faults {
    /// No fault yet, on the node called `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Faults {
            current: watch::channel(Fault::default()).0,
            stopping: watch::channel(false).0,
            node: node.into(),
        }
    }

    /// The node is shutting down: requests held by a pause or added latency
    /// are let go, refused as not applied, so that the drain need not wait
    /// for the fault to end (or the request's deadline), and the client may
    /// send them elsewhere.
    pub fn close(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits for [`Faults::close`], then returns the refusal for a request
    /// that had not started, being `held` ("held by a pause", say): what a
    /// wait that a shutdown ends answers.
    pub async fn refused_at_shutdown(&self, held: &str) -> Status {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|&stopping| stopping).await;
        proto::leaving(Status::unavailable(format!(
            "{} is shutting down, and did not start this request ({held}); {SAFE_TO_SEND_AGAIN}",
            self.node
        )))
    }

    /// Whether [`Faults::close`] has been called: the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Replaces the current fault; returns the one it replaced.
    pub fn set(&self, fault: Fault) -> Fault {
        self.current.send_replace(fault)
    }

    /// The current fault.
    pub fn get(&self) -> Fault {
        self.current.borrow().clone()
    }

    /// Applies the fault to a request arriving from `caller` (a peer's name, or
    /// `None` for clients): waits out a pause, sleeps the latency, maybe fails.
    ///
    /// A request waiting follows the fault as it changes: `--clear` ends its
    /// wait, a pause set meanwhile holds it, a cut link refuses it, and its
    /// error rate is the fault's when the wait ends.
    pub async fn enter(&self, caller: Option<&str>) -> Result<(), Status> {
        let mut current = self.current.subscribe();
        // The latency counts from the arrival, or from the end of a pause.
        let mut since = tokio::time::Instant::now();
        let fault = loop {
            self.check_link(caller)?;
            let fault = current.borrow_and_update().clone();
            if fault.pause {
                self.wait_out_the_pause(&mut current, caller).await?;
                since = tokio::time::Instant::now();
                continue;
            }
            if fault.latency.is_zero() {
                break fault;
            }
            tokio::select! {
                () = tokio::time::sleep_until(since + fault.latency) => break fault,
                changed = current.changed() => if changed.is_err() {
                    break fault;
                },
                refused = self.refused_at_shutdown("held by added latency") => {
                    return Err(refused);
                }
            }
        };
        if fault.error_rate > 0.0 && rand::random::<f64>() < fault.error_rate {
            // Refused before anything was done: a client may send it again,
            // and `clusterlab check` counts it as not applied.
            return Err(proto::not_applied(Status::unavailable(format!(
                "injected fault: {} fails {}% of requests (`clusterlab fault {} --clear` ends it)",
                self.node,
                percent(fault.error_rate),
                certs::flags::shell_word(&self.node),
            ))));
        }
        Ok(())
    }

    /// [`Faults::enter`] for a membership probe from `caller`: a cut link and
    /// a pause hold it like any request, but no latency or error rate. Those
    /// make the node slow or failing at its work, not gone: its peers would
    /// otherwise take it for suspect (and, with `--latency 2s`, past the
    /// probe's timeout, for dead, and move its keys) while the balancer, whose
    /// health checks no fault delays, kept sending it requests.
    pub async fn enter_probe(&self, caller: &str) -> Result<(), Status> {
        let mut current = self.current.subscribe();
        loop {
            self.check_link(Some(caller))?;
            if !current.borrow_and_update().pause {
                return Ok(());
            }
            self.wait_out_the_pause(&mut current, Some(caller)).await?;
        }
    }

    /// Waits until the node is unpaused or the link to `caller` is cut (for
    /// the caller to see), or refuses the request when the node shuts down
    /// first (a node not paused serves its drain as usual: an unpause wins a
    /// tie).
    async fn wait_out_the_pause(
        &self,
        current: &mut watch::Receiver<Fault>,
        caller: Option<&str>,
    ) -> Result<(), Status> {
        let cut = |fault: &Fault| caller.is_some() && fault.drop_peer.as_deref() == caller;
        tokio::select! {
            biased;
            _ = current.wait_for(|fault| !fault.pause || cut(fault)) => Ok(()),
            refused = self.refused_at_shutdown("held by a pause") => Err(refused),
        }
    }

    /// Fails at once if the link to `peer` is cut. The failure names this
    /// node, whose fault it is, and how to end it: it reaches the client under
    /// the peer's name (the replica that failed), where `clusterlab fault
    /// PEER --clear` would find no fault to clear.
    pub fn check_link(&self, peer: Option<&str>) -> Result<(), Status> {
        match (peer, &self.current.borrow().drop_peer) {
            (Some(peer), Some(dropped)) if peer == dropped => Err(Status::unavailable(format!(
                "injected fault: {}'s link to {peer} is cut (`clusterlab fault {} --clear` \
                 ends it)",
                self.node,
                certs::flags::shell_word(&self.node),
            ))),
            _ => Ok(()),
        }
    }
}

/// How a refusal at shutdown ends: nothing was started. A retried write's
/// refusal says otherwise in its place (`kv::as_a_retried_writes`): its
/// first attempt may have been applied.
pub const SAFE_TO_SEND_AGAIN: &str = "it is safe to send again";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Pauses `faults`, and returns a request the pause holds (still held
    /// an hour on).
    async fn held_by_a_pause(faults: &Arc<Faults>) -> tokio::task::JoinHandle<Result<(), Status>> {
        faults.set(Fault {
            pause: true,
            ..Fault::default()
        });
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.enter(None).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "a paused node answered");
        waiting
    }

    /// 5 s of latency, and every request failed after it.
    fn slow_and_failing() -> Fault {
        Fault {
            latency: Duration::from_secs(5),
            error_rate: 1.0,
            ..Fault::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_request_waits_until_the_fault_is_cleared() {
        let faults = Arc::new(Faults::new("n1"));
        let waiting = held_by_a_pause(&faults).await;
        faults.set(Fault::default());
        assert!(waiting.await.unwrap().is_ok());
    }

    /// A node that shuts down while paused lets the requests it holds go,
    /// refused as not applied: they used to wait out the drain's deadline.
    #[tokio::test(start_paused = true)]
    async fn a_paused_request_is_refused_when_the_node_shuts_down() {
        let faults = Arc::new(Faults::new("n1"));
        let waiting = held_by_a_pause(&faults).await;
        faults.close();
        let refused = waiting.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(proto::was_not_applied(&refused), "{refused:?}");
        // Not paused, a node shutting down serves its drain.
        faults.set(Fault::default());
        for _ in 0..20 {
            assert!(faults.enter(None).await.is_ok());
        }
    }

    /// A shutdown lets go of requests waiting out an added latency too,
    /// refused as not applied: with `--latency 60s` the drain waited to its
    /// deadline and then cut them off, though none had started.
    #[tokio::test(start_paused = true)]
    async fn a_request_held_by_latency_is_refused_when_the_node_shuts_down() {
        let faults = Arc::new(Faults::new("n1"));
        faults.set(Fault {
            latency: Duration::from_secs(60),
            ..Fault::default()
        });
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.enter(None).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the latency was not applied");
        let closed = tokio::time::Instant::now();
        faults.close();
        let refused = waiting.await.unwrap().unwrap_err();
        assert_eq!(closed.elapsed(), Duration::ZERO, "waited out the latency");
        assert!(proto::was_not_applied(&refused), "{refused:?}");
        assert_eq!(
            refused.message(),
            "n1 is shutting down, and did not start this request (held by added latency); \
             it is safe to send again"
        );
    }

    /// Requests already waiting out a latency are let go by `--clear`, and
    /// the error rate that was set with it no longer fails them.
    #[tokio::test(start_paused = true)]
    async fn clearing_a_fault_ends_the_latency_of_requests_already_waiting() {
        let faults = Arc::new(Faults::new("n1"));
        faults.set(slow_and_failing());
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.enter(None).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the latency was not applied");
        faults.set(Fault::default());
        assert!(waiting.await.unwrap().is_ok(), "failed by a cleared fault");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A request waiting out a latency follows the fault as it changes: a
    /// pause set meanwhile holds it (it used to go on as the latency was
    /// gone), and a link cut meanwhile refuses it.
    #[tokio::test(start_paused = true)]
    async fn a_pause_or_a_cut_link_set_during_a_latency_applies_to_requests_waiting() {
        let faults = Arc::new(Faults::new("n1"));
        let slow = Fault {
            latency: Duration::from_secs(5),
            ..Fault::default()
        };
        faults.set(slow.clone());
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.enter(Some("n3")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        faults.set(Fault {
            pause: true,
            ..Fault::default()
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "a paused node answered");
        // Unpaused to the latency again: it counts from the end of the pause.
        faults.set(slow.clone());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            !waiting.is_finished(),
            "the latency after the pause was not applied"
        );
        faults.set(Fault {
            drop_peer: Some("n3".into()),
            ..slow
        });
        let refused = waiting.await.unwrap().unwrap_err();
        assert_eq!(
            refused.message(),
            "injected fault: n1's link to n3 is cut (`clusterlab fault n1 --clear` ends it)"
        );
    }

    /// A probe is held by a pause and refused by a cut link, but neither
    /// slowed nor failed by a latency and an error rate.
    #[tokio::test(start_paused = true)]
    async fn a_probe_passes_latency_and_errors_but_not_a_pause_or_a_cut_link() {
        let faults = Arc::new(Faults::new("n1"));
        faults.set(slow_and_failing());
        let started = tokio::time::Instant::now();
        assert!(faults.enter_probe("n2").await.is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
        faults.set(Fault {
            pause: true,
            ..Fault::default()
        });
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.enter_probe("n2").await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "a paused node answered a probe");
        // Cut while still paused: refused at once, not at the end of the pause.
        faults.set(Fault {
            pause: true,
            drop_peer: Some("n2".into()),
            ..Fault::default()
        });
        assert!(
            waiting.await.unwrap().is_err(),
            "a cut link let a probe through"
        );
        // Unpaused, only the link to n2 is cut.
        faults.set(Fault {
            drop_peer: Some("n2".into()),
            ..Fault::default()
        });
        assert!(faults.enter_probe("n3").await.is_ok());
        assert!(faults.enter_probe("n2").await.is_err());
    }

    /// A small error rate is shown as given, not rounded away to nothing.
    #[tokio::test]
    async fn a_small_error_rate_is_shown_as_given() {
        let fault = Fault {
            error_rate: 0.004,
            ..Fault::default()
        };
        assert_eq!(fault.describe(), "error rate 0.004");
        let faults = Faults::new("n2");
        faults.set(fault);
        let err = loop {
            if let Err(err) = faults.enter(None).await {
                break err;
            }
        };
        assert!(err.message().contains("fails 0.4% of requests"), "{err:?}");
        for (rate, shown) in [
            (0.00001, "0.001"),
            (0.3, "30"),
            (1.0, "100"),
            (0.125, "12.5"),
        ] {
            assert_eq!(percent(rate).to_string(), shown);
        }
        let tiny = percent(1e-12).to_string();
        assert!(tiny.starts_with("0.0000000001"), "{tiny}");
    }

    #[tokio::test]
    async fn error_rate_one_fails_every_request_and_a_cut_link_fails_only_that_peer() {
        let faults = Faults::new("n2");
        faults.set(Fault {
            error_rate: 1.0,
            ..Fault::default()
        });
        let err = faults.enter(None).await.unwrap_err();
        assert_eq!(
            err.message(),
            "injected fault: n2 fails 100% of requests (`clusterlab fault n2 --clear` ends it)"
        );
        // Nothing was done: a client (and `check`) may count it so.
        assert!(proto::was_not_applied(&err), "{err:?}");
        faults.set(Fault {
            drop_peer: Some("n3".into()),
            ..Fault::default()
        });
        assert!(faults.enter(Some("n3")).await.is_err());
        assert!(faults.enter(Some("n2")).await.is_ok());
        assert!(faults.enter(None).await.is_ok());
    }

    #[test]
    fn requests_out_of_range_are_refused_with_the_range() {
        let request = proto::SetFaultRequest {
            error_rate: 1.5,
            ..Default::default()
        };
        let err = Fault::from_request(&request).unwrap_err();
        assert!(
            err.message()
                .ends_with("is out of range; choose 0.0 to 1.0"),
            "{err}"
        );
        let request = proto::SetFaultRequest {
            latency_ms: 200,
            drop_peer: "n2".into(),
            ..Default::default()
        };
        let fault = Fault::from_request(&request).unwrap();
        assert_eq!(fault.describe(), "latency 200ms, link to n2 cut");
        // `clear` with a fault was taken as `clear` alone, the fault dropped
        // without a word.
        let err = Fault::from_request(&proto::SetFaultRequest {
            clear: true,
            ..request
        })
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .starts_with("clear removes every fault, so it comes alone")
        );
        // As the CLI sends it, with the node's name.
        let alone = proto::SetFaultRequest {
            node: "n1".into(),
            clear: true,
            ..Default::default()
        };
        assert_eq!(Fault::from_request(&alone).unwrap().describe(), "none");
    }
}
