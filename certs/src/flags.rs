//! Command-line values that every program reads the same way: addresses to
//! dial, and durations.
//!
//! Durations use humantime's syntax (`500ms`, `30s`, `2m`). Where a flag is a
//! period, a run length or a deadline, zero is a mistake rather than a setting.
//! A zero timeout fails every call. A zero run length ends before it starts. A
//! zero period spins, or, in the case of `tokio::time::interval`, panics. So
//! these flags are refused at start-up, with the smallest value allowed.

use std::time::Duration;

/// Parses a duration above zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    match duration.is_zero() {
        true => Err(format!(
            "{text} is no time at all; give a duration above zero, such as 500ms or 30s"
        )),
        false => Ok(duration),
    }
}

/// A parser for a duration of at least `least`, for clap's `value_parser`.
pub fn duration_at_least(
    least: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
        match duration < least {
            true => Err(format!(
                "{text} is too short; choose {} or more",
                humantime::format_duration(least)
            )),
            false => Ok(duration),
        }
    }
}

/// HOST:PORT with a non-empty host and a port number, e.g. 10.0.0.2:7100 or node:7100.
pub fn check_host_port(flag: &str, addr: &str) -> Result<(), String> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{flag} {addr:?} is not HOST:PORT; write it like 127.0.0.1:7101 or node:7100"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_and_anything_above_is_taken() {
        assert_eq!(positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(positive_duration("2m"), Ok(Duration::from_secs(120)));
        let error = positive_duration("0s").unwrap_err();
        assert!(error.contains("0s is no time at all"), "{error}");
        assert!(error.contains("above zero"), "{error}");
        // humantime's own words for what it cannot read.
        assert!(positive_duration("ten").is_err());
    }

    #[test]
    fn a_floor_names_itself() {
        let parse = duration_at_least(Duration::from_millis(10));
        assert_eq!(parse("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse("9ms").unwrap_err(),
            "9ms is too short; choose 10ms or more"
        );
        assert!(parse("0s").is_err());
    }
}
