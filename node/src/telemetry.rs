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
use tracing_log::NormalizeEvent;
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

/// What to log: `CLUSTERLAB_LOG`, else `RUST_LOG`, else `info`, and what to
/// warn about it once the logger is up. A filter that would log nothing is
/// not passed over in silence: someone asked for debug lines and would see
/// none, and not know why.
fn filter() -> (EnvFilter, Option<String>) {
    for variable in ["CLUSTERLAB_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var(variable)
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            continue;
        };
        return parse_filter(variable, &value);
    }
    (EnvFilter::new("info"), None)
}

/// A warning about how the process starts, once logging has begun (`--name
/// auto`'s fallback), in the log's format and under this module's target,
/// so that a filter which leaves out the rest still lets it through.
pub fn warn_at_start(said: &str) {
    tracing::warn!(target: OWN_TARGET, "{said}");
}

/// The levels a filter may name; any other bare word is a module.
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// This module's target, let through at warn unless the filter names it, so
/// that its warning about the filter is seen.
const OWN_TARGET: &str = module_path!();

/// The filter `given` (from `variable`), and what to warn about it.
///
/// One that does not parse is replaced by `info`. A bare word that is not a
/// level parses: it names a module (`h2` logs h2 at every level). Written for
/// a level (`dbug`, `warning`), it would log nothing else, so a word one edit
/// from a level, or a level with more after it, is taken for a misspelled
/// one, and `info` is used too. A filter that gives no level for the rest
/// (`h2` alone) is kept, with a word that it logs nothing else.
///
/// Each directive is trimmed first: the filter itself would read the
/// ` info` of `node=debug, info` as a module named " info", and log nothing
/// but `node`.
fn parse_filter(variable: &str, given: &str) -> (EnvFilter, Option<String>) {
    const ALLOWED: &str = "write it like debug, or node=debug,info (a level: error, warn, info, \
                           debug or trace); logging at info";
    let directives: Vec<&str> = given
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let value = directives.join(",");
    let instead = |mistake: String| (EnvFilter::new("info"), Some(mistake));
    // Its own warning let through, unless the filter says otherwise of it.
    let own = match directives.iter().any(|d| d.starts_with(OWN_TARGET)) {
        true => String::new(),
        false => format!(",{OWN_TARGET}=warn"),
    };
    let filter = match EnvFilter::try_new(format!("{value}{own}")) {
        Ok(filter) => filter,
        Err(e) => {
            return instead(format!(
                "{variable}={given:?} is not a log filter ({e}); {ALLOWED}"
            ));
        }
    };
    let has_level = directives.iter().any(|d| is_level(d));
    if let Some((word, level)) = misspelled_level(&directives) {
        let rest = match has_level {
            true => "",
            false => ", and nothing else would be logged",
        };
        return instead(format!(
            "{variable}={given:?}: {word:?} is not a level (did you mean {level}?): a bare word \
             names a module to log{rest}; {ALLOWED}"
        ));
    }
    let warning = (!has_level).then(|| {
        format!(
            "{variable}={given:?} gives no level for the rest, so only what it names is logged; \
             a level is error, warn, info, debug or trace: add one to see the rest too, as in \
             {value},info"
        )
    });
    (filter, warning)
}

/// A level as a filter takes it alone: a name, in any case, or 0 to 5.
fn is_level(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    LEVELS.contains(&lower.as_str())
        || ["off", "0", "1", "2", "3", "4", "5"].contains(&lower.as_str())
}

/// The first bare word among a filter's directives that looks like a
/// misspelled level, with the level it looks like.
fn misspelled_level<'a>(directives: &[&'a str]) -> Option<(&'a str, &'static str)> {
    directives
        .iter()
        .copied()
        .filter(|word| word.chars().all(|c| c.is_ascii_alphabetic()))
        .filter(|word| !is_level(word))
        .find_map(|word| {
            let lower = word.to_ascii_lowercase();
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

/// Text from a client (a key, a request id) for a log field, on one line:
/// a key holding a line break would otherwise start a line of its own, which
/// reads as another of this process's, and one holding an escape sequence
/// would drive the terminal ([`proto::text::one_line`] says what it escapes).
pub fn escaped(text: &str) -> String {
    proto::text::one_line(text)
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
        // A line from the `log` crate (rustls writes there) comes through one
        // callsite whose target is "log"; its own target, file and line are
        // fields `log.target`, `log.file`... The normalized metadata puts them
        // back where a line of ours has them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        fields.insert("level".into(), meta.level().as_str().into());
        fields.insert("process".into(), self.process.clone().into());
        fields.insert("target".into(), meta.target().into());
        event.record(&mut JsonVisitor {
            fields: &mut fields,
            from_log: normalized.is_some(),
        });
        writeln!(writer, "{}", serde_json::Value::Object(fields))
    }
}

struct JsonVisitor<'a> {
    fields: &'a mut serde_json::Map<String, serde_json::Value>,
    /// A `log` crate line: its `log.*` fields are in the metadata already.
    from_log: bool,
}

impl JsonVisitor<'_> {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        if !(self.from_log && field.name().starts_with("log.")) {
            self.fields.insert(field.name().into(), value);
        }
    }
}

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is a client's text: in a log field, a line break in it would
    /// begin a line that reads as the process's own, an escape sequence
    /// would drive the terminal showing the log, and a right-to-left
    /// override would reorder it.
    #[test]
    fn a_clients_text_in_a_log_field_stays_on_its_line() {
        let key = "x\nn1 2026-12-06T10:00:00Z ERROR store: fsync failed\x1b[2J";
        let logged = escaped(key).to_string();
        assert_eq!(
            logged,
            "x\\nn1 2026-12-06T10:00:00Z ERROR store: fsync failed\\u{1b}[2J"
        );
        assert_eq!(escaped("ключ ✓").to_string(), "ключ ✓");
        // A backslash written before an `n` is not a line break.
        assert_eq!(escaped("a\\nb").to_string(), "a\\\\nb");
        assert_eq!(escaped("\u{202e}nimda").to_string(), "\\u{202e}nimda");
        assert_eq!(escaped("ad\u{200b}min").to_string(), "ad\\u{200b}min");
        // Nor a line separator some viewers break the line at.
        assert_eq!(escaped("a\u{2028}b").to_string(), "a\\u{2028}b");
    }

    /// A level, or modules' levels with one for the rest, is taken as
    /// written, with nothing to say.
    #[test]
    fn filters_with_a_level_are_taken() {
        for value in [
            "debug",
            "DEBUG",
            "node=debug,info",
            "tonic,warn",
            "off",
            "3",
            " info ",
        ] {
            let (_, warning) = parse_filter("CLUSTERLAB_LOG", value);
            assert_eq!(warning, None, "{value}");
        }
    }

    /// A space beside a comma is not part of a directive: the filter would
    /// take " info" for a module and log nothing but `node`.
    #[test]
    fn spaces_around_directives_are_not_part_of_them() {
        use tracing_subscriber::filter::LevelFilter;
        let (filter, warning) = parse_filter("CLUSTERLAB_LOG", " node=debug, info ");
        assert_eq!(warning, None);
        let directives = filter.to_string();
        assert!(
            directives.contains("node=debug") && !directives.contains(" info"),
            "{directives}"
        );
        let (filter, _) = parse_filter("CLUSTERLAB_LOG", " info ");
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::INFO));
    }

    /// A module alone is taken, and the process says that nothing else is
    /// logged (and lets its own saying so through).
    #[test]
    fn a_filter_with_no_level_is_taken_with_a_word() {
        let (filter, warning) = parse_filter("CLUSTERLAB_LOG", "h2");
        let warning = warning.expect("a warning");
        assert!(
            warning.starts_with("CLUSTERLAB_LOG=\"h2\" gives no level for the rest")
                && warning.ends_with("as in h2,info"),
            "{warning}"
        );
        // h2 at every level, and this module's warnings.
        let directives = filter.to_string();
        assert!(
            directives.contains("h2=trace") && directives.contains("node::telemetry=warn"),
            "{directives}"
        );
        // Unless the filter says what to do with it.
        let (filter, _) = parse_filter("CLUSTERLAB_LOG", "info,node::telemetry=off");
        assert!(
            !filter.to_string().contains("node::telemetry=warn"),
            "{filter}"
        );
    }

    /// A misspelled level is a module as far as the filter goes, and would log
    /// nothing at all: it is named, with the level it looks like, and info
    /// is used.
    #[test]
    fn a_misspelled_level_is_named_with_the_level_it_looks_like() {
        for (value, word, level, nothing_else) in [
            ("dbug", "dbug", "debug", true),
            ("warning", "warning", "warn", true),
            ("node=debug,inof", "inof", "info", true),
            ("tarce", "tarce", "trace", true),
            ("info,warning", "warning", "warn", false),
        ] {
            let (filter, mistake) = parse_filter("CLUSTERLAB_LOG", value);
            let mistake = mistake.unwrap_or_else(|| panic!("{value} was taken"));
            assert!(
                mistake.contains(&format!("{word:?} is not a level (did you mean {level}?)"))
                    && mistake.ends_with("logging at info"),
                "{mistake}"
            );
            assert_eq!(
                mistake.contains("nothing else would be logged"),
                nothing_else,
                "{mistake}"
            );
            assert_eq!(filter.to_string(), "info", "{value}");
        }
    }

    /// A line from the `log` crate, as rustls writes them, names its own
    /// module in JSON, as ours do, not the bridge's callsite ("log"), and
    /// carries no `log.*` fields beside.
    #[test]
    fn a_line_from_the_log_crate_keeps_its_own_target_in_json() {
        let logged = certs::testing::Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(Json {
                process: "n1".into(),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let record = log::Record::builder()
                .level(log::Level::Warn)
                .target("rustls::conn")
                .module_path_static(Some("rustls::conn"))
                .file_static(Some("src/conn.rs"))
                .line(Some(7))
                .args(format_args!("Sending fatal alert BadCertificate"))
                .build();
            tracing_log::format_trace(&record).unwrap();
            tracing::info!(target: "node::store", key = "k", "ours");
        });
        let lines: Vec<serde_json::Value> = logged
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let [from_log, ours] = &lines[..] else {
            panic!("two lines: {lines:?}")
        };
        assert_eq!(from_log["target"], "rustls::conn", "{from_log}");
        assert_eq!(from_log["level"], "WARN", "{from_log}");
        assert_eq!(
            from_log["message"], "Sending fatal alert BadCertificate",
            "{from_log}"
        );
        let fields: Vec<&String> = from_log.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["level", "message", "process", "target", "ts"],
            "{from_log}"
        );
        // A line of ours is as it was.
        assert_eq!(ours["target"], "node::store", "{ours}");
        assert_eq!(ours["key"], "k", "{ours}");
    }

    /// A filter that does not parse says so, and info is used.
    #[test]
    fn a_filter_that_does_not_parse_is_named() {
        let (filter, mistake) = parse_filter("RUST_LOG", "node=dbug");
        let mistake = mistake.expect("refused");
        assert!(
            mistake.starts_with("RUST_LOG=\"node=dbug\" is not a log filter"),
            "{mistake}"
        );
        assert_eq!(filter.to_string(), "info");
    }
}
