//! Deadlines as gRPC carries them.
//!
//! A client says how long it will wait in the `grpc-timeout` header: a number
//! of at most eight digits and a unit, `H`ours, `M`inutes, `S`econds,
//! `m`illiseconds, `u` (microseconds) or `n`anoseconds. The balancer passes what
//! is left of it on to the node, and both stop working on a request whose
//! deadline has passed. See gRPC's PROTOCOL-HTTP2.md, "Requests".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header that carries a call's deadline.
pub const HEADER: &str = "grpc-timeout";

/// The header that carries a write's deadline as a moment: milliseconds since
/// the Unix epoch, by the sender's clock.
///
/// `grpc-timeout` is relative: "within 2 s of receiving this". A node stopped
/// with a write still unread in its socket (SIGSTOP, `docker pause`) reads it
/// when it wakes, and counts the whole timeout from then: it would stamp the
/// write with a fresh version and overwrite whatever the client wrote after
/// giving up on it. Checked against this moment, the write is refused instead.
/// It assumes the clocks agree to well within a deadline, as on one machine.
pub const WRITE_BY_HEADER: &str = "clusterlab-write-by";

/// The [`WRITE_BY_HEADER`] value for a deadline `remaining` from now,
/// rounded up to the millisecond: never before the deadline itself.
pub fn write_by(remaining: Duration) -> u64 {
    let by = SystemTime::now() + remaining;
    by.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos().div_ceil(1_000_000) as u64)
}

/// Reads a [`WRITE_BY_HEADER`] value: milliseconds since the Unix epoch, in
/// decimal. `None` for anything else.
pub fn parse_write_by(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// How long ago the moment `write_by` (a [`WRITE_BY_HEADER`] value) passed,
/// if it has.
pub fn overdue(write_by: u64) -> Option<Duration> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let by = Duration::from_millis(write_by);
    now.checked_sub(by).filter(|late| !late.is_zero())
}

/// The client's deadline among a request's `headers`, as [`parse`] reads it.
pub fn of(headers: &tonic::codegen::http::HeaderMap) -> Option<Duration> {
    let value = headers.get(HEADER)?.to_str().ok()?;
    parse(value)
}

/// Reads a `grpc-timeout` value: `"500m"` is half a second. `None` for
/// anything that is not a number of up to 8 characters followed by one of
/// the six units.
///
/// Read exactly as tonic reads it, whose timer ends the call: at most eight
/// characters, as gRPC's protocol says, parsed as Rust parses a `u64` (so
/// `+5S` is 5 s, as to tonic). A value tonic ignores, or reads otherwise,
/// taken as the client's deadline (the sooner, it would leave the call to
/// tonic's timer), would leave the call with another, or none at all.
pub fn parse(value: &str) -> Option<Duration> {
    // Header text is ASCII; anything else would split inside a character.
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Which deadline a server keeps for a call: the client's (`theirs`, from
/// `grpc-timeout`) when it is the sooner, else the server's own `limit`
/// (`--request-timeout`). Returns the time and whether it is the server's.
pub fn sooner(theirs: Option<Duration>, limit: Duration) -> (Duration, bool) {
    match theirs {
        Some(theirs) if theirs <= limit => (theirs, false),
        _ => (limit, true),
    }
}

/// Whether `status` is tonic's report that a call's deadline passed.
///
/// When the deadline a client sent runs out on the server, tonic ends the call
/// with `CANCELLED` and the message "Timeout expired", and a client's own timer
/// reports the same. gRPC calls that `DEADLINE_EXCEEDED`, and so does
/// clusterlab wherever it shows a status to people: `CANCELLED` says someone
/// gave up on the call, not that it took too long.
pub fn is_timeout_expired(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled
        && status.message() == tonic::TimeoutExpired(()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_read_and_anything_else_is_not() {
        assert_eq!(parse("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse("99999999m"), Some(Duration::from_millis(99_999_999)));
        // As tonic reads it: a u64 may begin with a plus.
        assert_eq!(parse("+5S"), Some(Duration::from_secs(5)));
        for bad in [
            "",
            "S",
            "x",
            "10",
            "10s",
            "+S",
            "-5S",
            "5é",
            "1.5S",
            "99999999999999999999S",
            // Nine digits: tonic would not read it either.
            "000000005S",
            "100000000n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_sooner_deadline_is_kept_and_a_missing_one_is_the_servers() {
        let (second, ten) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(sooner(Some(second), ten), (second, false));
        assert_eq!(sooner(Some(ten), second), (second, true));
        assert_eq!(sooner(None, ten), (ten, true));
    }

    #[test]
    fn a_moment_to_write_by_is_overdue_only_once_it_has_passed() {
        assert_eq!(overdue(write_by(Duration::from_secs(60))), None);
        // Rounded up to the millisecond: never judged late before the deadline.
        let late = overdue(write_by(Duration::ZERO) - 5_000).expect("passed 5 s ago");
        assert!(late > Duration::from_millis(4_998), "{late:?}");
    }

    #[test]
    fn only_tonics_own_timeout_counts_as_a_deadline_that_passed() {
        let expired = tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert!(is_timeout_expired(&expired));
        assert!(!is_timeout_expired(&tonic::Status::cancelled(
            "the client went away"
        )));
        assert!(!is_timeout_expired(&tonic::Status::unavailable(
            "Timeout expired"
        )));
    }
}
