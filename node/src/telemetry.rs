//! Logging: one line per event, every line tagged with the process's name.
//!
//! Several clusterlab processes usually log into one terminal (or one `docker
//! compose logs`), so each line starts with the name of the process that wrote it.
//! `--log-format json` writes one JSON object per line for machines, with the
//! name in a `process` field. `RUST_LOG` (or `CLUSTERLAB_LOG`) picks what is logged,
//! e.g. `RUST_LOG=debug` or `RUST_LOG=node=debug,info`; the default is `info`.
//!
//! The balancer shares this module (it depends on the `node` crate for it).

use std::{fmt, io::Write};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines, each starting with the process's name (`n1`, `balancer`):
    /// `n1 2026-01-01T12:00:00Z  INFO listening addr=...`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Reports why the program could not start, and returns the exit status:
/// one line for a person, or a JSON log line for the machines that asked for
/// `--log-format json`.
pub fn cannot_start(
    program: &str,
    format: LogFormat,
    error: &anyhow::Error,
) -> std::process::ExitCode {
    match format {
        // Not `eprintln!`, which panics if stderr is closed.
        LogFormat::Text => {
            let _ = writeln!(std::io::stderr(), "{program}: {error:#}");
        }
        LogFormat::Json => tracing::error!(error = %format!("{error:#}"), "cannot start"),
    }
    std::process::ExitCode::FAILURE
}

/// What to log: `CLUSTERLAB_LOG`, else `RUST_LOG`, else `info`. A filter
/// that does not parse is not passed over in silence (someone asked for
/// debug lines and would see none, and not know why): what was wrong comes
/// back with `info`, to be logged once the logger is up.
fn filter() -> (EnvFilter, Option<String>) {
    for variable in ["CLUSTERLAB_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var(variable)
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            continue;
        };
        return match parse_filter(variable, &value) {
            Ok(filter) => (filter, None),
            Err(mistake) => (EnvFilter::new("info"), Some(mistake)),
        };
    }
    (EnvFilter::new("info"), None)
}

/// The levels a filter may name; any other bare word is a module.
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `value`, the filter in `variable`, or what is wrong with it, ending with
/// what is done instead.
///
/// A bare word that is not a level parses: it names a module (`h2` logs h2 at
/// every level, and nothing else). Written for a level (`dbug`, `warning`), it
/// would make the process log nothing at all, so a word one letter from a
/// level, or a level with more after it, is taken for a misspelled one.
fn parse_filter(variable: &str, value: &str) -> Result<EnvFilter, String> {
    const ALLOWED: &str = "write it like debug, or node=debug,info (a level: error, warn, info, debug or trace); \
         logging at info";
    let filter = EnvFilter::try_new(value)
        .map_err(|e| format!("{variable}={value:?} is not a log filter ({e}); {ALLOWED}"))?;
    match misspelled_level(value) {
        Some((word, level)) => Err(format!(
            "{variable}={value:?}: {word:?} is not a level (did you mean {level}?), and a bare \
             word names a module to log, which would leave out everything else; {ALLOWED}"
        )),
        None => Ok(filter),
    }
}

/// The first bare word of a filter that looks like a misspelled level, with
/// the level it looks like.
fn misspelled_level(value: &str) -> Option<(&str, &'static str)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_alphabetic()))
        .find_map(|word| {
            let lower = word.to_ascii_lowercase();
            if LEVELS.contains(&lower.as_str()) || lower == "off" {
                return None;
            }
            let like = LEVELS.into_iter().find(|level| {
                lower.starts_with(level) || strsim::damerau_levenshtein(&lower, level) <= 1
            })?;
            Some((word, like))
        })
}

/// Installs the global logger. Call once, first thing in `main`.
pub fn init(process: &str, format: LogFormat) {
    let (filter, mistake) = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr piped into `head`, or
        // into a supervisor that has died) is dropped. By default the
        // subscriber reports the failure with `eprintln!`, to the same closed
        // stderr, and that panics: in a request's task, the request fails,
        // while health checks, which log nothing, still pass.
        .log_internal_errors(false)
        // Colours for people at a terminal, none in files and `docker compose logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Text => builder
            .event_format(Tagged {
                process: process.to_string(),
                inner: tracing_subscriber::fmt::format().with_target(false),
            })
            .try_init(),
        LogFormat::Json => builder
            .event_format(Json {
                process: process.to_string(),
            })
            .try_init(),
    };
    // Already installed (a test that runs two servers in one process): keep the first.
    if result.is_ok()
        && let Some(mistake) = mistake
    {
        tracing::warn!("{mistake}");
    }
}

/// Text lines with the process name in front.
struct Tagged<F> {
    process: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Tagged<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", self.process)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// JSON lines: `{"ts":..,"level":..,"process":..,"message":..,<fields>}`.
struct Json {
    process: String,
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "ts".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        fields.insert("level".into(), event.metadata().level().as_str().into());
        fields.insert("process".into(), self.process.clone().into());
        fields.insert("target".into(), event.metadata().target().into());
        event.record(&mut JsonVisitor(&mut fields));
        writeln!(writer, "{}", serde_json::Value::Object(fields))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A level, a module's level, or a module alone is taken as written.
    #[test]
    fn filters_with_levels_or_modules_are_taken() {
        for value in [
            "debug",
            "DEBUG",
            "node=debug,info",
            "h2",
            "tonic,warn",
            "off",
        ] {
            assert!(
                parse_filter("CLUSTERLAB_LOG", value).is_ok(),
                "{value} was refused"
            );
        }
    }

    /// A misspelled level is a module as far as the filter goes, and would log
    /// nothing at all: it is named, with the level it looks like.
    #[test]
    fn a_misspelled_level_is_named_with_the_level_it_looks_like() {
        for (value, word, level) in [
            ("dbug", "dbug", "debug"),
            ("warning", "warning", "warn"),
            ("node=debug,inof", "inof", "info"),
            ("tarce", "tarce", "trace"),
        ] {
            let mistake = parse_filter("CLUSTERLAB_LOG", value)
                .err()
                .unwrap_or_else(|| panic!("{value} was taken"));
            assert!(
                mistake.contains(&format!("{word:?} is not a level (did you mean {level}?)"))
                    && mistake.ends_with("logging at info"),
                "{mistake}"
            );
        }
    }

    /// A filter that does not parse says so.
    #[test]
    fn a_filter_that_does_not_parse_is_named() {
        let mistake = parse_filter("RUST_LOG", "node=dbug").expect_err("refused");
        assert!(
            mistake.starts_with("RUST_LOG=\"node=dbug\" is not a log filter"),
            "{mistake}"
        );
    }
}
