//! Failures the way a person should see them: `CODE: what happened and what to do`.
//!
//! Exit status 1 means the operation failed: the message on stderr names the gRPC
//! status code, or starts `error:` when nothing was asked of the cluster (a
//! capture that needs root, say: [`Failure::local`]). 2 means the command line
//! asked for something that cannot be done as written: clap's own errors, and
//! [`Failure::usage`], printed the way clap prints its own: `error: ...`.

use std::{collections::BTreeMap, error::Error as StdError, fmt, sync::Mutex};

use certs::explain;

/// A failed operation: a gRPC status code and a sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// e.g. `NOT_FOUND`, `UNAVAILABLE`, `INVALID_ARGUMENT`; empty for a
    /// failure on this machine, where no status was involved.
    pub code: String,
    pub message: String,
    /// The command line's mistake (exit 2), found before anything was sent.
    pub usage: bool,
    /// The failed call's trace, if the server sent one in the status's
    /// details ([`proto::details`]): `-v` prints it, as it prints a
    /// success's, and `--json` puts it in the failure's object.
    pub trace: Option<Box<proto::Trace>>,
    /// Whether its command printed its report before failing (a `get` of a
    /// key not found, a `check` that found writes lost: [`report_then`]):
    /// then `--json` has said it already, and prints no object of its own.
    pub reported: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code.as_str() {
            "" => write!(f, "error: {}", self.message),
            code => write!(f, "{code}: {}", self.message),
        }
    }
}

impl StdError for Failure {}

/// The failure a command came to before it printed its report, while it
/// prints it: see [`report_then`].
static REPORTING: Mutex<Option<Failure>> = Mutex::new(None);

/// Prints a command's report (`print`, to stdout), then returns `verdict`,
/// what the command came to before printing it.
///
/// A reader may close stdout before the report is out (`clusterlab check |
/// head -3`): printing then panics, and `clusterlab`'s panic hook ends the
/// process. The report's reader has what it wanted, but the verdict is the
/// exit status, and a failed check must not exit 0 because its reader left:
/// the hook finds the verdict with [`verdict_while_reporting`].
pub fn report_then(verdict: Result<(), Failure>, print: impl FnOnce()) -> Result<(), Failure> {
    let mut reporting = REPORTING.lock().unwrap_or_else(|e| e.into_inner());
    *reporting = verdict.clone().err();
    drop(reporting);
    print();
    REPORTING.lock().unwrap_or_else(|e| e.into_inner()).take();
    verdict.map_err(|failure| Failure {
        reported: true,
        ..failure
    })
}

/// The failure whose report is being printed, if one is: for the panic hook
/// of a print that failed (see [`report_then`]). It does not wait for the
/// lock, which the panicking thread may hold.
pub fn verdict_while_reporting() -> Option<Failure> {
    match REPORTING.try_lock() {
        Ok(reporting) => reporting.clone(),
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().clone(),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// How a failure out of `--timeout` begins.
const NO_ANSWER_WITHIN: &str = "no answer within";

impl Failure {
    /// A failure with a gRPC status code and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.to_string(),
            message: message.into(),
            usage: false,
            trace: None,
            reported: false,
        }
    }

    /// A failure on this machine that no gRPC status describes: a capture
    /// without the right to capture, a capture file that cannot be written.
    /// Exit status 1.
    pub fn local(message: impl Into<String>) -> Self {
        Failure::new("", message)
    }

    /// A mistake in the command line that clap cannot see, such as an
    /// `--addr` that is not HOST:PORT or a `--value-file` that is not there.
    /// Exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            usage: true,
            ..Failure::local(message)
        }
    }

    /// The process's exit status for this failure: 2 for the command
    /// line's mistake, 1 for anything else.
    pub fn exit_status(&self) -> u8 {
        match self.usage {
            true => 2,
            false => 1,
        }
    }

    /// For a put or delete: a write whose answer did not come within
    /// `--timeout`, or whose connection broke after it was sent (`cut`: see
    /// [`cut_after_sending`]), may still have been applied, and the failure
    /// says so. (A node's own answers say it themselves: its deadline says
    /// whether it had begun the write, a failed quorum what was written.)
    pub fn of_a_write(mut self, cut: bool) -> Self {
        let no_answer =
            self.code == "DEADLINE_EXCEEDED" && self.message.starts_with(NO_ANSWER_WITHIN);
        if no_answer || cut {
            self.message.push_str(
                "; the write may still have been applied, so read the key before writing it again",
            );
        }
        self
    }

    /// Explains a failed call to `addr`. TLS problems hide deep in the status's
    /// chain of causes; they are the most useful part, so they come first.
    ///
    /// `diagnosis` is what [`certs::dial::Dialer::diagnose`] found by dialing
    /// again after the call failed (the server's alert, say; in plaintext,
    /// that the port requires TLS): a server refusing our certificate shows
    /// up as nothing more than a broken connection in the status itself.
    /// `timeout` is `--timeout`, named when the call ran out of it.
    pub fn from_status(
        status: &tonic::Status,
        addr: &str,
        plaintext: bool,
        diagnosis: Option<String>,
        timeout: std::time::Duration,
    ) -> Self {
        if let Some(why) = diagnosis {
            let reason = match plaintext {
                true => format!("{addr} {why} ({})", drop_plaintext()),
                false => format!("TLS with {addr} failed: {why}"),
            };
            return Failure::new("UNAVAILABLE", reason);
        }
        // Here a connection that closed is no sign the port requires TLS:
        // the diagnosis, which dials again, would have found that. It broke
        // mid-call (a server killed, a container recreated).
        if let Some(reason) = transport_reason(status, addr) {
            return Failure::new("UNAVAILABLE", reason);
        }
        if timed_out(status) {
            return Failure::new(
                "DEADLINE_EXCEEDED",
                format!(
                    "{NO_ANSWER_WITHIN} {timeout:?} (--timeout): a node may be hung or \
                     overloaded (see `clusterlab status`)"
                ),
            );
        }
        if let Some(http) = not_grpc(status) {
            return Failure::new(
                "UNAVAILABLE",
                format!(
                    "{addr} answered in HTTP ({http}), not in gRPC: it is no clusterlab node or \
                     balancer (a dashboard or /metrics port, perhaps){ADDR_HINT}"
                ),
            );
        }
        Failure {
            trace: proto::details::trace_of(status).map(Box::new),
            ..Failure::new(code_name(status.code()), server_words(status))
        }
    }

    /// The same failure to connect, for an address the cluster gave us rather
    /// than one the user typed: `node` is where `source` (the process first
    /// asked) said it is, so the hint about `--addr` does not apply.
    pub fn reaching(self, node: &str, source: &str) -> Self {
        let (reason, _) = without_hint(&self.message);
        // A running node may be out of this machine's reach at that address:
        // a container's name or IP, seen from the host (Docker Desktop on
        // macOS and Windows routes no packets to containers' IPs). A connect
        // that timed out may also be a node that is hung or paused.
        const INSIDE: &str = "run the command inside compose's network, as \
                              `docker compose run --rm client ...` does";
        let inside = if reason.contains(CONNECT_TIMED_OUT) {
            format!(
                " If it is, it may be hung or paused (`clusterlab status`), or this machine \
                 cannot reach that address (a container's, from the host?): then {INSIDE}"
            )
        } else if reason.contains(HOST_NOT_KNOWN) {
            format!(
                " If it is, this machine cannot resolve that name (a container's, from the \
                 host?): {INSIDE}"
            )
        } else {
            String::new()
        };
        Failure::new(
            &self.code,
            format!(
                "{node}, at the address {source} has for it: {reason}; is {node} running?{inside}"
            ),
        )
    }

    /// The failures to connect to each address of `--addr`, in order, as one:
    /// the only one as it is, or every address's reason, with the hint about
    /// `--addr` said once, at the end.
    pub fn none_answered(mut failures: Vec<Failure>) -> Self {
        if failures.len() == 1 {
            return failures.remove(0);
        }
        let code = match failures.iter().all(|f| f.code == failures[0].code) {
            true => failures[0].code.clone(),
            false => "UNAVAILABLE".to_string(),
        };
        let (reasons, hints): (Vec<&str>, Vec<Option<&str>>) =
            failures.iter().map(|f| without_hint(&f.message)).unzip();
        // Said once: nothing listening outweighs a process that may be hung.
        let hint = match (
            hints.contains(&Some(ADDR_HINT)),
            hints.contains(&Some(HUNG_HINT)),
        ) {
            (true, _) => ADDR_HINT,
            (false, true) => HUNG_HINT,
            (false, false) => "",
        };
        Failure::new(
            &code,
            format!(
                "none of the {} addresses in --addr could be used: {}{hint}",
                failures.len(),
                reasons.join("; "),
            ),
        )
    }

    /// A connection to `addr` not made within `--timeout` (`timeout`), when
    /// that is shorter than the dialer's own limit: the user's deadline, not
    /// a server that never answers. No request went out.
    pub fn connecting_out_of_time(addr: &str, timeout: std::time::Duration) -> Self {
        Failure::new(
            "DEADLINE_EXCEEDED",
            format!(
                "the connection to {addr} was not made within {timeout:?} (--timeout), \
                 its TCP and TLS handshakes included; nothing was sent. A node may be hung \
                 (see `clusterlab status`), or --timeout too short to connect"
            ),
        )
    }

    /// Explains a failure to connect to `addr`. Dialing in plaintext, one
    /// closed during setup is what a port that requires TLS does.
    pub fn from_connect(err: &tonic::transport::Error, addr: &str, plaintext: bool) -> Self {
        let reason = match plaintext && explain::closed_during_setup(err) {
            true => format!(
                "{addr} closed the connection during setup; it probably requires TLS ({})",
                drop_plaintext()
            ),
            false => transport_reason(err, addr)
                .unwrap_or_else(|| format!("cannot connect to {addr}: {}", explain::chain(err))),
        };
        Failure::new("UNAVAILABLE", reason)
    }
}

/// A `load` or `check` in which nothing succeeded, as `what` says, named by
/// the most common code in `errors` (code: count). `None` without errors:
/// nothing was tried.
pub fn nothing_succeeded(errors: &BTreeMap<String, u64>, what: &str) -> Option<Failure> {
    let (code, _) = errors.iter().max_by_key(|(_, n)| **n)?;
    Some(Failure::new(
        code,
        format!("{what}; is the cluster up? (`clusterlab status` shows each node)"),
    ))
}

/// What to check when the address the user gave does not answer.
const ADDR_HINT: &str = "; is the cluster running, and is --addr right?";
/// What to check when the address the user gave takes connections and does
/// not answer on them.
const HUNG_HINT: &str = "; is the process there hung or paused, and is --addr right?";

/// `message` without the hint about `--addr` it ends with, if it does, and
/// that hint.
fn without_hint(message: &str) -> (&str, Option<&'static str>) {
    [ADDR_HINT, HUNG_HINT]
        .into_iter()
        .find_map(|hint| Some((message.strip_suffix(hint)?, Some(hint))))
        .unwrap_or((message, None))
}

/// How [`transport_reason`] words a connect that timed out, and a host name
/// that does not resolve: [`Failure::reaching`] looks for them, to say a
/// node's address may be out of this machine's reach.
const CONNECT_TIMED_OUT: &str = "(connect timed out)";
const HOST_NOT_KNOWN: &str = "is not known here";

/// How to stop dialing in plaintext: drop `--tls plaintext`, or unset the
/// variable it came from (the README's plaintext lab exports one).
fn drop_plaintext() -> String {
    match certs::flags::variable_behind_for::<crate::cli::Cli>("tls") {
        Some(variable) => format!("unset {variable}, which asks for --tls plaintext"),
        None => "drop --tls plaintext".to_string(),
    }
}

/// Finds the root cause of a transport failure and says what it means.
fn transport_reason(err: &(dyn StdError + 'static), addr: &str) -> Option<String> {
    if let Some(tls) = explain::find_rustls_error(err) {
        return Some(format!(
            "TLS with {addr} failed: {}",
            explain::failed_connection(tls)
        ));
    }
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return Some(match io.kind() {
                ConnectionRefused => {
                    format!("nothing is listening at {addr} (connection refused){ADDR_HINT}")
                }
                TimedOut => format!("no answer from {addr} in time {CONNECT_TIMED_OUT}{HUNG_HINT}"),
                // rustls's words for it point at its docs.
                UnexpectedEof => format!("{addr} closed the connection before it answered"),
                ConnectionReset => {
                    format!("the connection to {addr} was reset before it answered")
                }
                // The standard library's getaddrinfo error has no kind of its own.
                // (The hint about --addr last, where `Failure::reaching` finds it.)
                _ if io.to_string().starts_with("failed to lookup address") => format!(
                    "the host in {addr} {HOST_NOT_KNOWN} ({io}; in docker compose, a \
                     service's name resolves only while it runs: `docker compose up -d`)\
                     {ADDR_HINT}"
                ),
                _ => format!("connection to {addr} failed: {io}"),
            });
        }
        next = e.source();
    }
    None
}

/// How long a worker of `load` or `check` rests after a connection was
/// refused: nothing listens, a refusal comes back at once, and without a pause
/// the workers would spin through thousands a second.
pub const REFUSED_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// True when the request failed to connect, so no node ever saw it: refused
/// (nothing listens at the address), not made within the connect timeout (a
/// process stopped; a request sent and then not answered in time fails
/// through tonic's timer instead, not the socket's), or a TLS handshake
/// that failed ([`handshake_failed`]).
pub fn never_sent(status: &tonic::Status) -> bool {
    let refused_or_late = io_error(status).is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
        )
    });
    refused_or_late || handshake_failed(status) || failed_to_connect(status)
}

/// True when tonic says the call failed to connect (a reconnect that found
/// no address, no route, or no handshake): it was never sent.
fn failed_to_connect(status: &tonic::Status) -> bool {
    cause::<tonic::ConnectError>(status).is_some()
}

/// True when the call failed here, on this side of a connection that broke
/// (a reset, a close, an HTTP/2 error), after its request may have gone out:
/// not an answer (a server's status has no cause of ours behind it), nor a
/// request [`never_sent`]. A write that failed so may have been applied,
/// unless the server refused our certificate, which only a dial afterwards
/// can tell ([`crate::connect::Connection::check_write`]).
pub fn cut_after_sending(status: &tonic::Status) -> bool {
    StdError::source(status).is_some() && !never_sent(status) && !proto::was_not_applied(status)
}

/// True when the TLS handshake failed: the address is a web port or a server
/// in plaintext (it did not answer in TLS), or a certificate was refused,
/// either way. No server read a request on that connection: a server that
/// refuses a client's certificate refuses the connection before it reads any.
pub fn handshake_failed(status: &tonic::Status) -> bool {
    matches!(
        explain::find_rustls_error(status),
        Some(
            rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::AlertReceived(_)
        )
    )
}

/// True when `status` is a call that got no answer in time: its deadline
/// passed with nothing back (tonic's "Timeout expired"), or the connection
/// could not be made within the connect timeout (a process stopped, an
/// address that takes connections and answers nothing). A node's own
/// `DEADLINE_EXCEEDED` is an answer, and not one of these; nor is an answer
/// whose message says something else timed out (a replica's "Connection
/// timed out", passed on): only what failed here, the status's causes, is
/// looked at, never the message.
pub fn no_answer_in_time(status: &tonic::Status) -> bool {
    timed_out(status) || StdError::source(status).is_some_and(explain::timed_out)
}

/// The socket's error behind `status`, if the connection failed.
fn io_error(status: &tonic::Status) -> Option<&std::io::Error> {
    cause::<std::io::Error>(status)
}

/// The first error of type `E` among `status`'s causes.
fn cause<E: StdError + 'static>(status: &tonic::Status) -> Option<&E> {
    std::iter::successors(StdError::source(status), |&e| e.source())
        .find_map(|e| e.downcast_ref::<E>())
}

use proto::code_name;

/// The name of `status`'s code, as people and `--json` see it.
///
/// A call that runs out of time, whether the client's or the server's timer
/// fires first, reaches us from tonic as `CANCELLED` ("Timeout expired"):
/// that is `DEADLINE_EXCEEDED` here ([`proto::deadline::is_timeout_expired`]).
/// A connection that failed is `UNAVAILABLE`, whatever code tonic gave it
/// (often `UNKNOWN`), as [`Failure::from_status`] says it.
pub fn status_code(status: &tonic::Status) -> &'static str {
    if timed_out(status) {
        "DEADLINE_EXCEEDED"
    } else if io_error(status).is_some()
        || explain::find_rustls_error(status).is_some()
        || not_grpc(status).is_some()
    {
        "UNAVAILABLE"
    } else {
        code_name(status.code())
    }
}

use proto::deadline::is_timeout_expired as timed_out;

/// The server's words in a status, fit for the terminal: a key it names
/// may fill them with escape sequences, and a gRPC server that is not
/// clusterlab's may send none at all.
pub fn server_words(status: &tonic::Status) -> String {
    match status.message() {
        "" => "(the server gave no reason)".to_string(),
        words => crate::render::printable(words),
    }
}

/// The HTTP status of an answer that was not gRPC at all, which tonic
/// reports in its own words ("received message with invalid compression flag:
/// 110 ... while receiving response with status: 404 Not Found").
fn not_grpc(status: &tonic::Status) -> Option<&str> {
    status
        .message()
        .split_once("while receiving response with status: ")
        .map(|(_, http)| http.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal `load` keeps, or `check` stops at, reads as the server's
    /// words when it gave some, shown not obeyed, and says so when it gave
    /// none (rather than ending "...for what they asked: ").
    #[test]
    fn the_servers_words_are_shown_and_their_absence_named() {
        let without = tonic::Status::unimplemented("");
        assert_eq!(server_words(&without), "(the server gave no reason)");
        let hostile = tonic::Status::permission_denied("no \x1b]0;owned\x07 way");
        assert_eq!(server_words(&hostile), "no \\u{1b}]0;owned\\u{7} way");
    }

    #[test]
    fn an_answer_in_http_not_grpc_is_named_as_such() {
        let status = tonic::Status::internal(
            "protocol error: received message with invalid compression flag: 110 (valid flags \
             are 0 and 1) while receiving response with status: 404 Not Found",
        );
        let failure = Failure::from_status(
            &status,
            "127.0.0.1:8080",
            true,
            None,
            std::time::Duration::from_secs(10),
        );
        assert_eq!(failure.code, "UNAVAILABLE");
        // `load` and `check` count it by the same name.
        assert_eq!(status_code(&status), "UNAVAILABLE");
        assert_eq!(
            failure.message,
            format!(
                "127.0.0.1:8080 answered in HTTP (404 Not Found), not in gRPC: it is no \
                 clusterlab node or balancer (a dashboard or /metrics port, perhaps){ADDR_HINT}"
            )
        );
    }

    /// In plaintext, a call whose connection broke, and that dialing again
    /// did not find requiring TLS (the diagnosis is `None`), broke mid-call:
    /// a server killed, say. It was said to require TLS, with the advice to
    /// drop plaintext, which would break every later command.
    #[test]
    fn a_plaintext_call_cut_mid_call_is_not_said_to_need_tls() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = tonic::Status::from_error(Box::new(reset));
        let timeout = std::time::Duration::from_secs(10);
        let failure = Failure::from_status(&status, "127.0.0.1:7101", true, None, timeout);
        assert_eq!(
            failure.message,
            "the connection to 127.0.0.1:7101 was reset before it answered"
        );
    }

    #[test]
    fn when_no_address_answers_each_reason_is_named() {
        let refused = |addr: &str| {
            Failure::new(
                "UNAVAILABLE",
                format!("nothing is listening at {addr} (connection refused){ADDR_HINT}"),
            )
        };
        let one = Failure::none_answered(vec![refused("127.0.0.1:1")]);
        assert_eq!(one, refused("127.0.0.1:1"));
        let both = Failure::none_answered(vec![refused("127.0.0.1:1"), refused("127.0.0.1:2")]);
        assert_eq!(
            both.to_string(),
            "UNAVAILABLE: none of the 2 addresses in --addr could be used: nothing is listening at \
             127.0.0.1:1 (connection refused); nothing is listening at 127.0.0.1:2 (connection \
             refused); is the cluster running, and is --addr right?"
        );
        let mixed = Failure::none_answered(vec![
            refused("127.0.0.1:1"),
            Failure::new("PERMISSION_DENIED", "reader may not call Admin/Status"),
        ]);
        assert_eq!(mixed.code, "UNAVAILABLE");
        assert!(mixed.message.contains("; reader may not call Admin/Status"));
        // One refused, one that never answered: the hint once, at the end.
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let silent =
            |addr: &str| Failure::new("UNAVAILABLE", transport_reason(&timed_out, addr).unwrap());
        for (failures, hint) in [
            (
                vec![refused("127.0.0.1:1"), silent("127.0.0.1:2")],
                ADDR_HINT,
            ),
            (
                vec![silent("127.0.0.1:1"), silent("127.0.0.1:2")],
                HUNG_HINT,
            ),
        ] {
            let said = Failure::none_answered(failures).message;
            assert_eq!(said.matches("is --addr right?").count(), 1, "{said}");
            assert!(said.ends_with(hint), "{said}");
        }
    }

    #[test]
    fn a_mistake_made_here_reads_as_clap_writes_one_and_a_status_names_its_code() {
        let usage = Failure::usage("--addr is empty; give HOST:PORT");
        assert_eq!(usage.to_string(), "error: --addr is empty; give HOST:PORT");
        assert!(usage.usage, "exit status 2");
        let local = Failure::local("cannot open a raw packet socket");
        assert_eq!(local.to_string(), "error: cannot open a raw packet socket");
        assert!(!local.usage, "exit status 1");
        let answer = Failure::new("NOT_FOUND", "no key k");
        assert_eq!(answer.to_string(), "NOT_FOUND: no key k");
    }

    #[test]
    fn a_call_out_of_time_is_deadline_exceeded_and_other_cancels_stay_cancelled() {
        let expired = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        // Nothing back in time, or no connection in time: no answer. A
        // node's own DEADLINE_EXCEEDED is an answer.
        let no_connection =
            tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        assert!(no_answer_in_time(&expired) && no_answer_in_time(&no_connection));
        assert!(never_sent(&no_connection) && !never_sent(&expired));
        let answered = tonic::Status::deadline_exceeded("n1 received this write late");
        assert!(!no_answer_in_time(&answered));
        let passed_on = tonic::Status::unavailable("n2: connect: Connection timed out");
        assert!(!no_answer_in_time(&passed_on));
        // A handshake that failed sent nothing; a TLS error later may have.
        let tls = |e: rustls::Error| tonic::Status::from_error(Box::new(e));
        let web_port = tls(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(handshake_failed(&web_port) && never_sent(&web_port));
        assert!(!never_sent(&tls(rustls::Error::DecryptError)));
        assert_eq!(status_code(&expired), "DEADLINE_EXCEEDED");
        let timeout = std::time::Duration::from_millis(1500);
        let failure = Failure::from_status(&expired, "127.0.0.1:7000", false, None, timeout);
        assert_eq!(failure.code, "DEADLINE_EXCEEDED");
        assert!(
            failure
                .message
                .starts_with("no answer within 1.5s (--timeout)"),
            "{failure}"
        );
        // A read changes nothing; only a write may have been applied all the same.
        assert!(!failure.message.contains("applied"), "{failure}");
        let may_have_been = "; the write may still have been applied, so read the key before \
                             writing it again";
        let write = failure.of_a_write(cut_after_sending(&expired));
        assert!(write.message.ends_with(may_have_been), "{write}");
        assert_eq!(write.message.matches("applied").count(), 1, "{write}");
        assert_eq!(
            status_code(&tonic::Status::cancelled("the client went away")),
            "CANCELLED"
        );
        assert_eq!(
            status_code(&tonic::Status::unavailable("down")),
            "UNAVAILABLE"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let cut = tonic::Status::from_error(Box::new(reset));
        assert_eq!(cut.code(), tonic::Code::Unknown);
        assert_eq!(status_code(&cut), "UNAVAILABLE");
        // A write whose connection broke after it went out may have been
        // applied (it used to say only that the connection failed); one
        // refused at connect, or a node's own answer, says what it says.
        let write = Failure::from_status(&cut, "127.0.0.1:7101", false, None, timeout)
            .of_a_write(cut_after_sending(&cut));
        assert_eq!(
            write.to_string(),
            format!(
                "UNAVAILABLE: the connection to 127.0.0.1:7101 was reset before it \
                 answered{may_have_been}"
            )
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!cut_after_sending(&tonic::Status::from_error(Box::new(
            refused
        ))));
        assert!(!cut_after_sending(&tonic::Status::unavailable(
            "write quorum 2 cannot be met"
        )));
    }

    #[test]
    fn a_node_the_cluster_named_is_not_blamed_on_addr() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let reason = transport_reason(&refused, "10.0.0.2:7100").unwrap();
        let typed = Failure::new("UNAVAILABLE", reason);
        assert!(typed.message.ends_with("is --addr right?"), "{typed}");
        let named = typed.reaching("n2", "balancer");
        assert_eq!(named.code, "UNAVAILABLE");
        assert_eq!(
            named.message,
            "n2, at the address balancer has for it: nothing is listening at 10.0.0.2:7100 \
             (connection refused); is n2 running?"
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_says_so_and_what_to_check() {
        // What tokio's lookup returns when getaddrinfo knows no such host.
        let io = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        let reason = transport_reason(&io, "balancer:7000").unwrap();
        assert!(
            reason.starts_with("the host in balancer:7000 is not known here"),
            "{reason}"
        );
        assert!(reason.contains("Name or service not known"), "{reason}");
        assert!(reason.contains("docker compose up -d"), "{reason}");
        assert!(reason.ends_with(ADDR_HINT), "{reason}");
        // A node's address the cluster gave: --addr is not to blame, and
        // it may be a container's, which the host cannot resolve.
        let named = Failure::new("UNAVAILABLE", reason).reaching("n3", "n1");
        assert!(!named.message.contains("--addr"), "{named}");
        assert!(named.message.contains("is n3 running? If it is"), "{named}");
        assert!(
            named
                .message
                .ends_with("`docker compose run --rm client ...` does")
        );
        // A container's IP, from the host on macOS: no answer in time. Typed
        // as --addr, it says what to check.
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let reason = transport_reason(&timed_out, "172.18.0.3:7100").unwrap();
        assert!(
            reason.ends_with("is the process there hung or paused, and is --addr right?"),
            "{reason}"
        );
        let named = Failure::new("UNAVAILABLE", reason).reaching("n2", "balancer");
        assert!(!named.message.contains("--addr"), "{named}");
        assert!(named.message.contains("run --rm client"), "{named}");
        // Or a node that is hung or paused, which a TLS handshake that never
        // ends looks like too.
        assert!(named.message.contains("hung or paused"), "{named}");
        // Any other I/O failure keeps its own words.
        let other = std::io::Error::other("something else");
        let reason = transport_reason(&other, "balancer:7000").unwrap();
        assert_eq!(reason, "connection to balancer:7000 failed: something else");
    }
}
