//! How results look: one-line traces for people, JSON objects for scripts.

use proto::{ReplicaReport, Trace, Version, replica_report::Outcome};
use serde_json::{Value, json};

pub use proto::text::printable;

/// The width text for people is wrapped to: a projector's terminal.
pub const COLUMNS: usize = 80;

/// `text` wrapped to [`COLUMNS`], its first line indented by `first` spaces
/// and the rest by `rest`, ending with a newline.
pub fn wrapped(text: &str, first: usize, rest: usize) -> String {
    let (first, rest) = (" ".repeat(first), " ".repeat(rest));
    // Lines break between words only: a hyphenated name
    // (`clusterlab-node-1`) is one, to copy whole.
    let options = textwrap::Options::new(COLUMNS)
        .initial_indent(&first)
        .subsequent_indent(&rest)
        .word_splitter(textwrap::WordSplitter::NoHyphenation);
    textwrap::fill(text, options) + "\n"
}

/// `n` and the noun: "1 request", "2 requests".
pub fn counted(n: u64, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// `1732200000000.3@n1`: wall-clock ms, logical counter, the node that stamped it.
pub fn version(v: &Version) -> String {
    format!("{}.{}@{}", v.wall_ms, v.logical, v.node)
}

/// A version as a JSON object.
pub fn version_json(v: Option<&Version>) -> Value {
    match v {
        Some(v) => {
            json!({"wall_ms": v.wall_ms, "logical": v.logical, "node": v.node, "text": version(v)})
        }
        None => Value::Null,
    }
}

fn outcome_name(report: &ReplicaReport) -> &'static str {
    match Outcome::try_from(report.outcome).unwrap_or(Outcome::Unspecified) {
        Outcome::Acked => "ACKED",
        Outcome::Answered => "ANSWERED",
        Outcome::Repaired => "REPAIRED",
        Outcome::Failed => "FAILED",
        Outcome::TimedOut => "TIMED_OUT",
        Outcome::Pending => "PENDING",
        Outcome::Superseded => "SUPERSEDED",
        Outcome::Unspecified => "UNKNOWN",
    }
}

/// `HH:MM:SS.mmmZ` of a Unix time in milliseconds, for event lines: UTC, as
/// the `Z` says and the processes' log lines are.
pub fn time_of_day(unix_ms: u64) -> String {
    let ms_of_day = unix_ms % 86_400_000;
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (s, ms) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

fn micros(us: u64) -> String {
    if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

/// The trace as one line, e.g.
/// `trace: coordinator=n1 quorum=1 replicas: n1 ACKED v=1732200000000.0@n1 (0.4ms)`.
pub fn trace_line(trace: &Trace) -> String {
    let line = trace_line_as_sent(trace);
    // Names and details come from servers (a detail may quote a key): one
    // line, and nothing the terminal would take as a command.
    proto::text::one_line(&line)
}

fn trace_line_as_sent(trace: &Trace) -> String {
    let mut line = String::from("trace:");
    if !trace.balancer.is_empty() {
        line += &format!(" balancer={} policy={}", trace.balancer, trace.policy);
        if !trace.choice.is_empty() {
            line += &format!(" choice=\"{}\"", trace.choice);
        }
        let attempts: Vec<String> = trace
            .attempts
            .iter()
            .map(|a| ended(format!("{} {}", a.node, a.outcome), &a.detail, a.latency_us))
            .collect();
        line += &format!(" attempts: {}", attempts.join(", "));
        // A failure no coordinator's trace came with (a bad request, a dial
        // that failed) has only the balancer's part.
        if trace.coordinator.is_empty() {
            return line;
        }
        line += " |";
    }
    line += &format!(
        " coordinator={} quorum={} replicas:",
        trace.coordinator, trace.quorum
    );
    let replicas: Vec<String> = trace
        .replicas
        .iter()
        .map(|r| {
            let mut s = format!("{} {}", r.node, outcome_name(r));
            if let Some(v) = &r.version {
                s += &format!(" v={}", version(v));
            }
            ended(s, &r.detail, r.latency_us)
        })
        .collect();
    line + " " + &replicas.join(", ")
}

/// An attempt's or a replica's `outcome`, then why it failed, if it says,
/// and how long it took: `n3 FAILED [unreachable] (2.5ms)`.
fn ended(outcome: String, detail: &str, latency_us: u64) -> String {
    match detail.is_empty() {
        true => format!("{outcome} ({})", micros(latency_us)),
        false => format!("{outcome} [{detail}] ({})", micros(latency_us)),
    }
}

/// The whole trace as JSON.
pub fn trace_json(trace: Option<&Trace>) -> Value {
    let Some(trace) = trace else {
        return Value::Null;
    };
    json!({
        "balancer": trace.balancer,
        "policy": trace.policy,
        "choice": trace.choice,
        "attempts": trace.attempts.iter().map(|a| json!({
            "node": a.node, "outcome": a.outcome, "latency_us": a.latency_us, "detail": a.detail,
        })).collect::<Vec<_>>(),
        "coordinator": trace.coordinator,
        "quorum": trace.quorum,
        "replicas": trace.replicas.iter().map(|r| json!({
            "node": r.node,
            "outcome": outcome_name(r),
            "version": version_json(r.version.as_ref()),
            "latency_us": r.latency_us,
            "detail": r.detail,
        })).collect::<Vec<_>>(),
    })
}

/// A key or value on one line of a listing (`scan`): text as
/// [`proto::text::one_line`] shows it (line breaks, tabs and control
/// characters escaped, so that each entry stays one line and no value can
/// send the terminal escape sequences); bytes that are not UTF-8 as a note of
/// their length.
pub fn one_line(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => proto::text::one_line(text),
        Err(_) => format!(
            "<{} bytes, not UTF-8 text: `clusterlab get KEY > FILE` saves them>",
            value.len()
        ),
    }
}

/// A value for JSON: a string when it is UTF-8 text, else `null` with the bytes
/// in hex under `value_hex`.
pub fn value_fields(value: &[u8]) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    match std::str::from_utf8(value) {
        Ok(text) => {
            fields.insert("value".into(), text.into());
        }
        Err(_) => {
            fields.insert("value".into(), Value::Null);
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            fields.insert("value_hex".into(), hex.into());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_a_thing_is_not_plural() {
        assert_eq!(counted(1, "retry", "retries"), "1 retry");
        assert_eq!(counted(0, "retry", "retries"), "0 retries");
        assert_eq!(counted(2, "call denied", "calls denied"), "2 calls denied");
    }

    #[test]
    fn an_event_time_is_the_utc_time_of_day_and_says_so() {
        // 2026-12-04 05:39:18.042 UTC
        assert_eq!(time_of_day(1_796_362_758_042), "05:39:18.042Z");
    }

    /// Text is shown on one line (proto::text has the characters it
    /// escapes); bytes that are not UTF-8 are described.
    #[test]
    fn a_listed_value_stays_on_its_line_and_cannot_drive_the_terminal() {
        assert_eq!(one_line(b"hello, w\xc3\xb6rld"), "hello, wörld");
        assert_eq!(
            one_line(b"two\nlines\tand a tab"),
            "two\\nlines\\tand a tab"
        );
        assert_eq!(one_line(b"\x1b[2Jcleared"), "\\u{1b}[2Jcleared");
        assert_eq!(one_line(br"two\nlines"), r"two\\nlines");
        assert_eq!(
            one_line(&[0xff, 0xfe, 0x00]),
            "<3 bytes, not UTF-8 text: `clusterlab get KEY > FILE` saves them>"
        );
    }

    #[test]
    fn trace_line_says_why_an_attempt_failed_over() {
        let attempt = |node: &str, outcome: &str, detail: &str| proto::Attempt {
            node: node.into(),
            outcome: outcome.into(),
            latency_us: 300,
            detail: detail.into(),
        };
        let trace = Trace {
            balancer: "balancer".into(),
            policy: "round-robin".into(),
            attempts: vec![
                attempt("n2", "UNAVAILABLE", "n2 is shutting down"),
                attempt("n1", "OK", ""),
            ],
            coordinator: "n1".into(),
            quorum: 2,
            ..Trace::default()
        };
        assert!(
            trace_line(&trace).contains(
                "attempts: n2 UNAVAILABLE [n2 is shutting down] (300us), n1 OK (300us) |"
            ),
            "{}",
            trace_line(&trace)
        );
    }

    /// A failure the balancer tried on nodes that sent no trace of their
    /// own shows the attempts alone.
    #[test]
    fn trace_line_of_the_balancers_part_alone_ends_with_its_attempts() {
        let trace = Trace {
            balancer: "balancer".into(),
            policy: "round-robin".into(),
            attempts: vec![proto::Attempt {
                node: "n1".into(),
                outcome: "INVALID_ARGUMENT".into(),
                latency_us: 800,
                detail: "read quorum 9 is more than the 3 replica(s)".into(),
            }],
            ..Trace::default()
        };
        assert_eq!(
            trace_line(&trace),
            "trace: balancer=balancer policy=round-robin attempts: n1 INVALID_ARGUMENT \
             [read quorum 9 is more than the 3 replica(s)] (800us)"
        );
    }

    #[test]
    fn trace_line_names_coordinator_and_every_replica() {
        let trace = Trace {
            coordinator: "n1".into(),
            quorum: 2,
            replicas: vec![
                ReplicaReport {
                    node: "n1".into(),
                    outcome: Outcome::Acked as i32,
                    version: Some(Version {
                        wall_ms: 5,
                        logical: 1,
                        node: "n1".into(),
                    }),
                    latency_us: 400,
                    detail: String::new(),
                },
                ReplicaReport {
                    node: "n3".into(),
                    outcome: Outcome::Failed as i32,
                    version: None,
                    latency_us: 2500,
                    detail: "unreachable".into(),
                },
            ],
            ..Trace::default()
        };
        assert_eq!(
            trace_line(&trace),
            "trace: coordinator=n1 quorum=2 replicas: n1 ACKED v=5.1@n1 (400us), \
             n3 FAILED [unreachable] (2.5ms)"
        );
    }

    /// What servers say (an error, a trace, an event) reaches the terminal
    /// without its escape sequences: a key they quote is anyone's to choose.
    #[test]
    fn a_servers_words_cannot_drive_the_terminal() {
        assert_eq!(
            printable("key \"\x1b]0;owned\x07\" exists\nnext line"),
            "key \"\\u{1b}]0;owned\\u{7}\" exists\nnext line"
        );
        let trace = Trace {
            coordinator: "n1".into(),
            replicas: vec![ReplicaReport {
                node: "n1".into(),
                outcome: Outcome::Superseded as i32,
                detail: "version 1.0@n1 of \"\x1b[2J\" already stands".into(),
                ..ReplicaReport::default()
            }],
            ..Trace::default()
        };
        let line = trace_line(&trace);
        assert!(!line.contains('\x1b'), "{line}");
        assert!(line.contains("of \"\\u{1b}[2J\""), "{line}");
    }

    #[test]
    fn binary_values_are_hex_in_json() {
        assert_eq!(value_fields(b"hi")["value"], "hi");
        let binary = value_fields(&[0xff, 0x00]);
        assert_eq!(binary["value"], Value::Null);
        assert_eq!(binary["value_hex"], "ff00");
    }
}
