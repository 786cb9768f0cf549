//! Command lines that every program reads the same way: the environment
//! variable behind each flag, addresses to dial, numbers and durations.
//!
//! Every flag of every program can also come from a `CLUSTERLAB_*` variable
//! ([`parse`]): `--data-dir` from `CLUSTERLAB_DATA_DIR`, a subcommand's
//! `load --duration` from `CLUSTERLAB_LOAD_DURATION`.
//!
//! Durations use humantime's syntax (`500ms`, `30s`, `2m`). Where a flag is a
//! period, a run length or a deadline, zero is a mistake rather than a setting.
//! A zero timeout fails every call. A zero run length ends before it starts. A
//! zero period spins, or, in the case of `tokio::time::interval`, panics. So
//! these flags are refused at start-up, with the smallest value allowed; and
//! above [`MAX_DURATION`], which is a typo, not a plan.

use std::{
    fmt::Display,
    net::{IpAddr, SocketAddr},
    num::{IntErrorKind, ParseIntError},
    ops::RangeInclusive,
    str::FromStr,
    time::Duration,
};

use clap::{ArgAction, Command};

/// Parses a program's command line, after [`with_env`]. Errors exit 2, as
/// clap's own do.
pub fn parse<T: clap::Parser>() -> T {
    parse_refusing_empty(&[])
}

/// [`parse`], but the `variables` named, set empty, are not taken for unset
/// as other empty variables are: the empty value goes to the flag, whose
/// parser refuses it. For a flag whose absence means something a slip
/// should not choose: `CLUSTERLAB_CA_KEY=` (a compose file's `${CA_KEY:-}`,
/// with `CA_KEY` forgotten) would otherwise keep the CA's key beside every
/// process's certificates.
pub fn parse_refusing_empty<T: clap::Parser>(variables: &[&str]) -> T {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = typed_flags_win(with_env(T::command()), &args);
    let mut command = variables_that_say_nothing_give_no_flag(command, variables);
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| match is_help(&e) {
            // Help lists every flag's variable, those set aside above too.
            true => with_env(T::command())
                .try_get_matches_from(&args)
                .err()
                .filter(is_help)
                .unwrap_or(e)
                .exit(),
            false => name_the_variable(e, &command, args.iter().cloned()).exit(),
        });
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// Whether clap's "error" is the help it was asked for, or gives unasked.
fn is_help(error: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// The program's own flags typed in `args` no longer read their variables.
/// A typed flag wins over its variable anyway, but clap hands a global
/// flag (`--timeout`, which a subcommand's line may carry too) to every
/// subcommand, variable and all, and reads the variable there: a bad
/// `CLUSTERLAB_TIMEOUT` would be refused though `--timeout 5s` was typed.
fn typed_flags_win(command: Command, args: &[std::ffi::OsString]) -> Command {
    // After a bare `--`, everything is a value (`put -- --odd-key v`).
    let typed: Vec<&str> = args
        .iter()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.to_str())
        .collect();
    let long: Vec<&str> = typed
        .iter()
        .filter_map(|arg| arg.strip_prefix("--"))
        .map(|flag| flag.split('=').next().unwrap_or(flag))
        .collect();
    // `-v`, `-vv`: letters after one dash (a negative number has none).
    let short: Vec<char> = typed
        .iter()
        .filter(|arg| !arg.starts_with("--"))
        .filter_map(|arg| arg.strip_prefix('-'))
        .flat_map(str::chars)
        .collect();
    command.mut_args(|arg| {
        let was_typed = arg.get_long().is_some_and(|l| long.contains(&l))
            || arg.get_short().is_some_and(|s| short.contains(&s));
        match was_typed {
            true => arg.env(None::<&str>),
            false => arg,
        }
    })
}

/// A variable that says nothing gives no flag: a switch's that says off
/// (`CLUSTERLAB_INIT_KEEP=0`), or an empty one for a flag that may be left
/// out and has no default (`CLUSTERLAB_PEERS_DNS=`, as a compose file's
/// `${PEERS_DNS:-}` makes it). clap counts any value from a variable as the
/// flag given (its issue 5591), so an off switch would still clash with the
/// flags it cannot go with, and stand for the one flag of a group that needs
/// one (`fault`'s); and an empty address was refused as not HOST:PORT,
/// where an empty `CLUSTERLAB_PEERS` means none. Such a variable is dropped:
/// the flag is as if unset, unless it is one of the `kept`.
fn variables_that_say_nothing_give_no_flag(command: Command, kept: &[&str]) -> Command {
    let command = command.mut_args(|arg| {
        if arg
            .get_env()
            .is_some_and(|name| kept.iter().any(|kept| name == *kept))
        {
            return arg;
        }
        let variable = arg.get_env().and_then(std::env::var_os);
        let says = |what: &dyn Fn(&str) -> bool| {
            (variable.as_ref()).is_some_and(|value| value.to_str().is_some_and(what))
        };
        let off =
            matches!(arg.get_action(), ArgAction::SetTrue) && says(&|v| switch(v) == Ok(false));
        let empty = arg.get_action().takes_values()
            && !arg.is_required_set()
            && arg.get_default_values().is_empty()
            && says(&|v| v.trim().is_empty());
        match off || empty {
            true => arg.env(None::<&str>),
            false => arg,
        }
    });
    each_subcommand(command, |_, sub| {
        variables_that_say_nothing_give_no_flag(sub, kept)
    })
}

/// `command` with `change` made to each of its subcommands, which it is
/// given with its name.
fn each_subcommand(mut command: Command, change: impl Fn(&str, Command) -> Command) -> Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for name in names {
        command = command.mut_subcommand(&name, |sub| change(&name, sub));
    }
    command
}

/// Exits 2 with `message`, as clap does for a flag it refuses: for the
/// mistakes that only show when flags are taken together. A message that
/// starts with a flag (`--listen "7000" is not HOST:PORT`) whose value came
/// from its variable says so, as [`parse`]'s refusals do; so does one that
/// names another flag it was measured against ("choose 1 to 2 (--replicas)",
/// with `CLUSTERLAB_REPLICAS=2` left over from an earlier lab).
pub fn usage_error<T: clap::CommandFactory>(message: impl std::fmt::Display) -> ! {
    let mut command = with_env(T::command());
    let mut message = message.to_string();
    let tips: Vec<String> = flags_named(&message)
        .into_iter()
        .enumerate()
        .filter_map(|(i, long)| {
            let variable = variable_behind(&command, long, None, std::env::args_os())?;
            Some(if i == 0 && message.starts_with("--") {
                format!("the value came from {variable}; set it to a valid one, or unset it")
            } else {
                format!("--{long} was not typed: its value came from {variable}")
            })
        })
        .collect();
    // The message is laid out when the error is made, so the tips go in it.
    for tip in tips {
        message += &format!("\n\n  tip: {tip}");
    }
    command
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

/// The long flags `message` names (`--replicas` in "choose 1 to 2
/// (--replicas)"), each once, in the order they first appear.
fn flags_named(message: &str) -> Vec<&str> {
    let mut flags: Vec<&str> = Vec::new();
    for (at, _) in message.match_indices("--") {
        let rest = &message[at + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let long = &rest[..end];
        let starts_a_word = message[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
        if starts_a_word
            && long.starts_with(|c: char| c.is_ascii_lowercase())
            && !flags.contains(&long)
        {
            flags.push(long);
        }
    }
    flags
}

/// The tip [`usage_error`] adds, for a message about `--long` made where
/// exiting is not the caller's to do: which variable the value came from, if
/// the flag was not typed and its variable is set.
pub fn variable_tip_for<T: clap::CommandFactory>(long: &str) -> Option<String> {
    variable_tip(&with_env(T::command()), long, None, std::env::args_os())
}

/// The variable flag `--long`'s value came from, if the flag was not typed
/// and its variable is set.
pub fn variable_behind_for<T: clap::CommandFactory>(long: &str) -> Option<String> {
    variable_behind(&with_env(T::command()), long, None, std::env::args_os())
}

/// clap names the flag whose value it refuses, even when the value came from
/// the flag's variable: `CLUSTERLAB_TLS=off` gets "invalid value 'off' for
/// '--tls'", though nobody typed `--tls`. This adds which variable it was, so
/// that a learner looks in the right place (a compose file's environment, an
/// `export` from an earlier lab) rather than at the command line.
fn name_the_variable(
    mut error: clap::Error,
    command: &Command,
    args: impl Iterator<Item = std::ffi::OsString>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() == ErrorKind::ArgumentConflict {
        return name_a_conflicting_variable(error, command, args);
    }
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    // "--tls <TLS>" names the flag `tls`.
    let Some(long) = arg.split(' ').next().and_then(|a| a.strip_prefix("--")) else {
        return error;
    };
    if let Some(tip) = variable_tip(command, long, Some(value), args) {
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    error
}

/// Two flags that cannot go together, one of them (or both) from its
/// variable: `CLUSTERLAB_EVENTS_NO_FOLLOW=1` and a typed `--follow`. clap
/// names both flags as if typed; this says which variable to unset.
fn name_a_conflicting_variable(
    mut error: clap::Error,
    command: &Command,
    args: impl Iterator<Item = std::ffi::OsString>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let args: Vec<std::ffi::OsString> = args.collect();
    let flags: Vec<String> = [ContextKind::InvalidArg, ContextKind::PriorArg]
        .into_iter()
        .filter_map(|kind| match error.get(kind) {
            Some(ContextValue::String(flag)) => Some(vec![flag.clone()]),
            Some(ContextValue::Strings(flags)) => Some(flags.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let from_variables: Vec<String> = flags
        .iter()
        .filter_map(|flag| {
            let long = flag.split(' ').next()?.strip_prefix("--")?;
            let variable = variable_behind(command, long, None, args.iter().cloned())?;
            Some(format!("--{long} came from {variable}"))
        })
        .collect();
    if !from_variables.is_empty() {
        let tip = format!(
            "{}; unset it to use the flag typed",
            from_variables.join(", and ")
        );
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    error
}

/// A tip naming the variable the value of flag `--long` came from, if the
/// flag was not typed and its variable is set (to `value`, when that is known).
fn variable_tip(
    command: &Command,
    long: &str,
    value: Option<&str>,
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<String> {
    let variable = variable_behind(command, long, value, args)?;
    Some(format!(
        "the value came from {variable}; set it to a valid one, or unset it"
    ))
}

/// The variable flag `--long`'s value came from: set (to `value`, when that
/// is known), and the flag not typed.
fn variable_behind(
    command: &Command,
    long: &str,
    value: Option<&str>,
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<String> {
    // A flag on the command line wins over its variable: then it was typed.
    let args: Vec<String> = args.filter_map(|a| a.into_string().ok()).collect();
    let typed = is_typed(long, &args);
    // The program's own flags, then those of the subcommand on the line
    // (`put --w` and `delete --w` have a variable each).
    let subcommand = args
        .iter()
        .find_map(|a| command.get_subcommands().find(|sub| sub.get_name() == a));
    let variable = std::iter::once(command)
        .chain(subcommand)
        .find_map(|command| variable_holding(command, long, value));
    variable.filter(|_| !typed)
}

/// Whether `--long` is on the command line `args` (before a bare `--`).
fn is_typed(long: &str, args: &[String]) -> bool {
    let flag = format!("--{long}");
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// The variable a program's own flag `--long` took `value` from, when the
/// flag was not typed and its variable (`CLUSTERLAB_LONG`) holds `value`:
/// for a mistake found after the flags were read, which a learner should
/// look for in a compose file's environment, not on the command line.
pub fn variable_holding_value(long: &str, value: &str) -> Option<String> {
    let args: Vec<String> = std::env::args_os()
        .filter_map(|a| a.into_string().ok())
        .collect();
    let variable = env_name("CLUSTERLAB", long);
    let holds = std::env::var(&variable).is_ok_and(|held| held.trim() == value.trim());
    (holds && !is_typed(long, &args)).then_some(variable)
}

/// The variable behind `command`'s `--long` flag, if it is set (to `value`,
/// when given).
fn variable_holding(command: &Command, long: &str, value: Option<&str>) -> Option<String> {
    command
        .get_arguments()
        .filter(|arg| arg.get_long() == Some(long))
        .filter_map(|arg| arg.get_env())
        .find(|variable| {
            std::env::var_os(variable).is_some_and(|v| value.is_none_or(|value| v == value))
        })
        .map(|variable| variable.to_string_lossy().into_owned())
}

/// Gives every flag without a variable of its own the one named by
/// [`env_name`], and lets switches (`--json`) take 1/0, yes/no, on/off or
/// true/false from the environment, as people write them there.
///
/// It also lets every value be a negative number (`put k -5`, `--rate -1`):
/// clap would take `-5` for a flag and answer "unexpected argument '-5'",
/// where the value's own parser says what the flag takes.
pub fn with_env(command: Command) -> Command {
    fill_env(command, "CLUSTERLAB")
}

fn fill_env(command: Command, prefix: &str) -> Command {
    let command = command.mut_args(|arg| {
        let arg = match arg.get_action().takes_values() {
            true => arg.allow_negative_numbers(true),
            false => arg,
        };
        if arg.is_positional() {
            return arg;
        }
        let arg = match arg.get_env() {
            Some(_) => arg,
            None => {
                let name = env_name(prefix, arg.get_long().unwrap_or(arg.get_id().as_str()));
                arg.env(name)
            }
        };
        match arg.get_action() {
            ArgAction::SetTrue => arg.value_parser(switch),
            _ => arg,
        }
    });
    each_subcommand(command, |name, sub| fill_env(sub, &env_name(prefix, name)))
}

/// A switch's value from its variable, as people write them there (clap's
/// own parser for these says only "value was not a boolean").
fn switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "on" | "true" | "t" => Ok(true),
        "0" | "no" | "n" | "off" | "false" | "f" | "" => Ok(false),
        _ => Err(format!(
            "{text:?} is neither on nor off; write 1 or 0, yes or no, on or off, true or false"
        )),
    }
}

/// `CLUSTERLAB` and `data-dir` make `CLUSTERLAB_DATA_DIR`; a subcommand's
/// flags add the subcommand: `CLUSTERLAB_LOAD_DURATION`.
pub fn env_name(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.to_uppercase().replace('-', "_"))
}

/// The longest duration a flag takes: a year. Longer is a slip (`10000h`
/// for `10000ms`), and far longer overflows clock arithmetic: tonic panics on
/// a deadline beyond 99,999,999 hours, and adding a few hundred billion years
/// to the clock panics too. A year as humantime reads `1y`: 365.25 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60 + 6 * 60 * 60);

/// Parses a duration from 0 to [`MAX_DURATION`], in humantime's syntax.
pub fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|_| {
        // humantime's own words ("expected number at 0") are a parser's.
        let number = text.trim();
        let unitless = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && number.bytes().filter(|&b| b == b'.').count() <= 1;
        match unitless {
            true => {
                format!("{text:?} has no unit; write {number}s (seconds), {number}ms or {number}m")
            }
            false => format!("{text:?} is not a duration; write it like 500ms, 30s, 2m or 1h"),
        }
    })?;
    match duration > MAX_DURATION {
        true => Err(format!("{text} is more than a year; choose 1y or less")),
        false => Ok(duration),
    }
}

/// Parses a duration above zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = self::duration(text)?;
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
        let duration = duration(text)?;
        match duration < least {
            true => Err(format!(
                "{text} is too short; choose {} or more",
                humantime::format_duration(least)
            )),
            false => Ok(duration),
        }
    }
}

/// Parses `--identity`: the name of a certificate in `--certs`, which an
/// empty value is not (it would look for `.pem`). Spaces around it, as a
/// variable may carry them, are not part of any name.
pub fn identity(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err(
            "it is empty; give the name of a certificate in --certs (NAME.pem and \
                   NAME.key): a client's, such as admin, or node, or balancer"
                .into(),
        ),
        name => Ok(name.to_string()),
    }
}

/// An unsigned whole-number type a flag can hold: [`whole_number`] names its
/// largest value when a number is beyond it.
pub trait Whole: FromStr<Err = ParseIntError> + Display {
    /// The largest value of the type.
    const MAX: Self;
}

macro_rules! whole {
    ($($t:ty),*) => {
        $(impl Whole for $t {
            const MAX: Self = <$t>::MAX;
        })*
    };
}

whole!(u8, u16, u32, u64, usize);

/// Parses a whole number (a count, a quorum, a rate) with an error a person
/// can act on: Rust's own says "invalid digit found in string".
pub fn whole_number<T: Whole>(text: &str) -> Result<T, String> {
    whole_number_allowing(text, "write one in digits, like 3", "give 0 or more")
}

/// Parses a count of one or more, for clap's `value_parser`: an error says
/// so, but for a number beyond the type, which names the type's most.
pub fn at_least_one<T: Whole + PartialEq + From<u8>>(text: &str) -> Result<T, String> {
    let allowed = "give 1 or more";
    match whole_number_allowing::<T>(text, allowed, allowed)? {
        n if n == T::from(0) => Err(format!("0 would be none; {allowed}")),
        n => Ok(n),
    }
}

/// [`whole_number`], whose errors end with what the flag allows: `digits`
/// for a number not written in digits, `from_zero` for one below zero. (One
/// beyond the type names the type's most, as the flag may allow no less.)
pub fn whole_number_allowing<T: Whole>(
    text: &str,
    digits: &str,
    from_zero: &str,
) -> Result<T, String> {
    parse_whole(text).map_err(|problem| match problem {
        Problem::NotDigits(problem) => format!("{problem}; {digits}"),
        Problem::TooLarge => format!("{text} is too large; the most is {}", T::MAX),
        Problem::BelowZero => format!("{text} is below zero; {from_zero}"),
    })
}

/// A parser for a whole number within `range`, for clap's `value_parser`:
/// its errors name the range (clap's own `range` writes it as `1..=9`).
pub fn number_in<T>(
    range: RangeInclusive<T>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: Whole + PartialOrd + Clone + Send + Sync + 'static,
{
    move |text| {
        let allowed = format!("choose {} to {}", range.start(), range.end());
        // A list given with spaces (`--ports "7000, 7100"`) is taken as meant.
        let text = text.trim();
        match parse_whole(text) {
            Ok(number) if range.contains(&number) => Ok(number),
            Ok(_) | Err(Problem::TooLarge | Problem::BelowZero) => {
                Err(format!("{text} is out of range; {allowed}"))
            }
            Err(Problem::NotDigits(problem)) => Err(format!("{problem}; {allowed}")),
        }
    }
}

/// Parses a fraction from 0.0 to 1.0: a share of reads, a rate of errors.
pub fn fraction(text: &str) -> Result<f64, String> {
    let allowed = "choose 0.0 to 1.0";
    let value = decimal(text).map_err(|e| format!("{e}; {allowed}"))?;
    match (0.0..=1.0).contains(&value) {
        true => Ok(value),
        false => Err(format!("{text} is out of range; {allowed}")),
    }
}

/// Parses a number, as in 0.9 or 250, with an error that says so ("invalid
/// float literal" is Rust's).
pub fn decimal(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// What is wrong with a whole number.
enum Problem {
    /// Not written as one: empty, or a character other than digits.
    NotDigits(String),
    /// Written as one, but beyond the largest the flag's type holds.
    TooLarge,
    /// Written as one, with a minus sign.
    BelowZero,
}

/// What is wrong with `text` as a whole number, if anything.
fn parse_whole<T: Whole>(text: &str) -> Result<T, Problem> {
    text.parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::Empty => Problem::NotDigits("no number given".into()),
        IntErrorKind::PosOverflow => Problem::TooLarge,
        // An unsigned type reads "-1" as an invalid digit.
        _ if text.strip_prefix('-').is_some_and(|digits| {
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }) =>
        {
            Problem::BelowZero
        }
        _ => Problem::NotDigits(format!("{text:?} is not a whole number")),
    })
}

/// A side port's address (`--metrics`, `--dashboard`), or `None` for `off`
/// (or an empty value): the flag's way to turn the port off.
pub fn side_port(addr: &str) -> Option<&str> {
    match addr.trim() {
        "" | "off" => None,
        addr => Some(addr),
    }
}

/// Checks a side port's flag: `off`, or an address to listen on
/// ([`check_listen`]) that does not clash with `--listen`'s
/// ([`check_side_port`]).
pub fn check_side(flag: &str, side: &str, listen: &str, usual_port: u16) -> Result<(), String> {
    let Some(side) = side_port(side) else {
        return Ok(());
    };
    check_listen(flag, side, usual_port).map_err(|e| format!("{e}, or off for none"))?;
    check_side_port(flag, side, listen)
}

/// Refuses a side port (`--metrics`, `--dashboard`) on the serving port
/// (`--listen`): the second bind would fail as if another process held it.
/// Two IP addresses clash on the same port when they are equal, or when one
/// is a wildcard that covers the other: 0.0.0.0 covers every IPv4 address,
/// and `[::]` every address (Linux binds it for IPv4 too). Port 0 (any free
/// port) never clashes. A host name is compared as written.
pub fn check_side_port(flag: &str, side: &str, listen: &str) -> Result<(), String> {
    let (side, listen) = (side.trim(), listen.trim());
    let clash = match (side.parse::<SocketAddr>(), listen.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => clash(a, b),
        _ => side == listen,
    };
    match clash {
        true => Err(format!(
            "{flag} {side} would share a port with --listen {listen}; give {flag} a port \
             of its own (or turn it off with {flag} off)"
        )),
        false => Ok(()),
    }
}

/// Whether binding `a` and `b` both would fail: the same port, on the same
/// IP address or where one is a wildcard that covers the other (see
/// [`check_side_port`]). Port 0 (any free port) never clashes.
pub fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    let (a_ip, b_ip) = (a.ip(), b.ip());
    let overlap = a_ip == b_ip || covers(a_ip, b_ip) || covers(b_ip, a_ip);
    a.port() != 0 && a.port() == b.port() && overlap
}

/// HOST:PORT with a host and a port number, e.g. 10.0.0.2:7100 or node:7100.
pub fn check_host_port(flag: &str, addr: &str) -> Result<(), String> {
    match port_of(addr) {
        Some(0) => Err(format!(
            "{flag} {addr:?} has port 0, which a listener takes as \"any free port\": nothing \
             can be reached there; give the port the process listens on, like 127.0.0.1:7101 \
             or node:7100"
        )),
        Some(_) => Ok(()),
        None => Err(format!(
            "{flag} {addr:?} is not HOST:PORT; write it like 127.0.0.1:7101 or node:7100{}{}{}",
            ipv6_hint(addr, 7101),
            host_character_hint(addr),
            port_range_hint(addr)
        )),
    }
}

/// One address of a list flag's (`--peers`, `--nodes`, `--addr`): HOST:PORT,
/// as [`check_host_port`] has it. Several with spaces or semicolons between,
/// as lists in variables are often written, are told that commas separate
/// them: they are not an IPv6 address, nor a host with a space in it.
pub fn check_list_entry(flag: &str, addr: &str) -> Result<(), String> {
    let pieces: Vec<&str> = (addr.split(|c: char| c.is_whitespace() || c == ';'))
        .filter(|piece| !piece.is_empty())
        .collect();
    let several = pieces.len() > 1 && pieces.iter().all(|p| check_host_port(flag, p).is_ok());
    match several {
        true => Err(format!(
            "{flag} {addr:?} is not HOST:PORT; a list of addresses is comma-separated, as {}",
            pieces.join(",")
        )),
        false => check_host_port(flag, addr),
    }
}

/// An address to listen on: HOST:PORT, where port 0 means any free port.
/// `usual_port` goes into the example, so that it matches the program's default.
pub fn check_listen(flag: &str, addr: &str, usual_port: u16) -> Result<(), String> {
    match port_of(addr) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{flag} {addr:?} is not HOST:PORT; write it like 127.0.0.1:{usual_port} \
             (this machine only) or 0.0.0.0:{usual_port} (every interface){}{}",
            ipv6_hint(addr, usual_port),
            port_range_hint(addr)
        )),
    }
}

/// The port of HOST:PORT, if `addr` is that: a host name, an IPv4 address
/// or an IPv6 address in brackets (`[::1]`), a colon, and a port number.
/// `::1:7100` is not: which colon ends the address? Nor is a host name of
/// other characters than a host name's (letters, digits, `-`, `.`, and `_`,
/// which Docker's container names hold): `nöde:7100` or `a?b:7100` passed,
/// and every use then failed ("invalid URI"), the balancer without a word.
fn port_of(addr: &str) -> Option<u16> {
    let (host, port) = addr.rsplit_once(':')?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        }
    };
    port.parse().ok().filter(|_| host_ok)
}

/// For a port of digits past the largest (`127.0.0.1:71010`, a digit too
/// many): that it is.
fn port_range_hint(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((_, port))
            if !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && port.parse::<u16>().is_err() =>
        {
            format!("; its port, {port}, is above 65535, the largest a port can be")
        }
        _ => String::new(),
    }
}

/// For a host name with a character no host name has (`nöde`): which.
fn host_character_hint(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    if host.starts_with('[') {
        return String::new();
    }
    match host
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !"-._:".contains(*c))
    {
        Some(c) => format!("; {c:?} cannot be in a host name (letters, digits, '-', '.' and '_')"),
        None => String::new(),
    }
}

/// For an address with several colons and no brackets: how to write an IPv6
/// address (in brackets) instead.
fn ipv6_hint(addr: &str, port: u16) -> String {
    // Spaces or semicolons are more likely two addresses than an IPv6 one.
    let spaced = addr.contains(|c: char| c.is_whitespace() || c == ';');
    match addr.matches(':').count() > 1 && !addr.contains('[') && !spaced {
        true => format!("; an IPv6 address goes in brackets, as [::1]:{port}"),
        false => String::new(),
    }
}

/// `text` as one word a shell reads back as `text`, for a command to paste:
/// bare when it is plain, in single quotes when it holds spaces or quotes
/// (`'a b'`), and as `$'...'` with escapes when it holds characters that do
/// not show as themselves (control characters, and those that hide or
/// reorder the text: [`proto::text::hides`]), which bash and zsh read. So
/// the word on the screen is the one pasted. (`scan`'s `--start-after` hint,
/// `clusterlab-local`'s restart commands.)
pub fn shell_word(text: &str) -> String {
    let plain =
        |c: char| (c.is_alphanumeric() || "_-./:=@%+,".contains(c)) && !proto::text::hides(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    if !text.chars().any(proto::text::hides) {
        return format!("'{}'", text.replace('\'', "'\\''"));
    }
    let escaped: String = text
        .chars()
        .map(|c| match c {
            '\'' => "\\'".to_string(),
            '\\' => "\\\\".to_string(),
            '\n' => "\\n".to_string(),
            '\t' => "\\t".to_string(),
            '\r' => "\\r".to_string(),
            // Byte by byte, as UTF-8: bash reads `\u200b` by the locale
            // (literally in the C locale), `\xe2\x80\x8b` the same in any.
            c if proto::text::hides(c) => c
                .encode_utf8(&mut [0; 4])
                .bytes()
                .map(|b| format!("\\x{b:02x}"))
                .collect(),
            c => c.to_string(),
        })
        .collect();
    format!("$'{escaped}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_flags_once_each_in_order() {
        assert_eq!(
            flags_named("--write-quorum 3 is out of range; choose 1 to 2 (--replicas)"),
            ["write-quorum", "replicas"]
        );
        assert_eq!(
            flags_named("--metrics=127.0.0.1:7100 is --listen's address; --metrics"),
            ["metrics", "listen"]
        );
        assert!(flags_named("a-- b --- c --9 x--y").is_empty());
    }

    #[test]
    fn off_turns_a_side_port_off() {
        assert_eq!(side_port("off"), None);
        assert_eq!(side_port(" "), None);
        assert_eq!(side_port("127.0.0.1:9100"), Some("127.0.0.1:9100"));
        assert_eq!(
            check_side("--metrics", "off", "127.0.0.1:7100", 9100),
            Ok(())
        );
    }

    #[test]
    fn a_number_that_will_not_do_is_named_with_what_would() {
        let replicas = number_in(1..=9u32);
        assert_eq!(whole_number::<u32>("42"), Ok(42));
        assert_eq!(replicas("9"), Ok(9));
        assert_eq!(
            replicas(" 9 "),
            Ok(9),
            "a list item after a comma and a space"
        );
        assert_eq!(fraction("0.25"), Ok(0.25));
        let digits = "write one in digits, like 3";
        for (refused, why) in [
            (
                whole_number::<u32>("1.5").map(drop),
                format!(r#""1.5" is not a whole number; {digits}"#),
            ),
            (
                whole_number::<u32>("").map(drop),
                format!("no number given; {digits}"),
            ),
            (
                replicas("0").map(drop),
                "0 is out of range; choose 1 to 9".into(),
            ),
            (
                replicas("three").map(drop),
                r#""three" is not a whole number; choose 1 to 9"#.into(),
            ),
            (
                replicas("99999999999").map(drop),
                "99999999999 is out of range; choose 1 to 9".into(),
            ),
            (
                whole_number::<u32>("99999999999").map(drop),
                "99999999999 is too large; the most is 4294967295".into(),
            ),
            (
                whole_number::<u8>("300").map(drop),
                "300 is too large; the most is 255".into(),
            ),
            (
                replicas("-1").map(drop),
                "-1 is out of range; choose 1 to 9".into(),
            ),
            (
                whole_number::<u32>("-1").map(drop),
                "-1 is below zero; give 0 or more".into(),
            ),
            (
                at_least_one::<u64>("-5").map(drop),
                "-5 is below zero; give 1 or more".into(),
            ),
            (
                at_least_one::<u64>("five").map(drop),
                r#""five" is not a whole number; give 1 or more"#.into(),
            ),
            (
                at_least_one::<u64>("0").map(drop),
                "0 would be none; give 1 or more".into(),
            ),
            (
                fraction("1.5").map(drop),
                "1.5 is out of range; choose 0.0 to 1.0".into(),
            ),
            (
                fraction("half").map(drop),
                r#""half" is not a number; choose 0.0 to 1.0"#.into(),
            ),
        ] {
            assert_eq!(refused, Err(why));
        }
    }

    /// A word must be pasteable: bash reads it back as the text it came from.
    #[test]
    fn a_shell_word_reads_back_as_the_text() {
        assert_eq!(shell_word("user/42"), "user/42");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("q\tz\nw"), "$'q\\tz\\nw'");
        for text in [
            "plain",
            "a b",
            "it's",
            "q\"x $HOME",
            "q\tz\nw",
            "\u{1b}[2J",
            "a\\b'c\n",
            "\u{85}x",
            "ad\u{200b}min",
            "ad\u{3164}min",
            "\u{202e}nimda",
            "flag\u{e0041}",
            "",
        ] {
            let word = shell_word(text);
            // What would not show as itself is written out.
            assert!(!word.chars().any(proto::text::hides), "{word:?}");
            // In any locale: the C locale reads `\u` escapes otherwise.
            let out = std::process::Command::new("bash")
                .env("LC_ALL", "C")
                .args(["-c", &format!("printf %s {word}")])
                .output()
                .expect("running bash");
            assert_eq!(String::from_utf8_lossy(&out.stdout), text, "{word}");
        }
    }

    #[test]
    fn an_address_to_listen_on_needs_a_host_and_a_port_which_may_be_zero() {
        assert_eq!(check_listen("--listen", "127.0.0.1:0", 7100), Ok(()));
        assert_eq!(check_listen("--listen", "node:7100", 7100), Ok(()));
        assert_eq!(check_listen("--listen", "[::]:7100", 7100), Ok(()));
        assert_eq!(
            check_listen("--listen", "127.0.0.1:70000", 7000),
            Err(
                "--listen \"127.0.0.1:70000\" is not HOST:PORT; write it like 127.0.0.1:7000 \
                 (this machine only) or 0.0.0.0:7000 (every interface); its port, 70000, is \
                 above 65535, the largest a port can be"
                    .into()
            )
        );
        let err = check_host_port("--nodes", "127.0.0.1:71010").unwrap_err();
        assert!(
            err.ends_with("its port, 71010, is above 65535, the largest a port can be"),
            "{err}"
        );
        for wrong in ["127.0.0.1", ":7100", "node:http", "[::1:7100"] {
            assert_eq!(
                check_listen("--listen", wrong, 7000),
                Err(format!(
                    "--listen {wrong:?} is not HOST:PORT; write it like 127.0.0.1:7000 \
                     (this machine only) or 0.0.0.0:7000 (every interface)"
                ))
            );
        }
    }

    #[test]
    fn an_identity_is_a_name_without_the_spaces_around_it() {
        assert_eq!(identity(" node "), Ok("node".to_string()));
        let err = identity("  ").unwrap_err();
        assert!(err.starts_with("it is empty;"), "{err}");
        assert!(err.contains("node, or balancer"), "{err}");
    }

    /// `::1:7100` used to pass the start-up checks, then fail at every use
    /// ("invalid URI"), a peer every half second: which colon ends the address?
    #[test]
    fn an_ipv6_address_must_be_in_brackets() {
        assert_eq!(check_host_port("--peers", "[::1]:7100"), Ok(()));
        assert_eq!(check_host_port("--addr", "[fe80::1]:7000"), Ok(()));
        for wrong in ["::1:7100", "fe80::1:7100", "127.0.0.1:7000:1"] {
            let err = check_host_port("--peers", wrong).unwrap_err();
            assert!(
                err.ends_with("; an IPv6 address goes in brackets, as [::1]:7101"),
                "{err}"
            );
            let err = check_listen("--listen", wrong, 7100).unwrap_err();
            assert!(
                err.ends_with("; an IPv6 address goes in brackets, as [::1]:7100"),
                "{err}"
            );
        }
        // Port 0 is HOST:PORT, but no one listens there.
        let err = check_host_port("--peers", "n1:0").unwrap_err();
        assert!(err.starts_with("--peers \"n1:0\" has port 0"), "{err}");
        for wrong in [
            "[::1]",
            "[nonsense]:7100",
            "a b:7100",
            "nöde:7100",
            "a?b:7100",
        ] {
            assert!(check_host_port("--peers", wrong).is_err(), "{wrong}");
        }
        // A list with spaces or semicolons is told how lists are written.
        for list in ["127.0.0.1:7101 127.0.0.1:7102", "a:1; b:2"] {
            let err = check_list_entry("--nodes", list).unwrap_err();
            assert!(
                err.contains("a list of addresses is comma-separated, as "),
                "{err}"
            );
            assert!(!err.contains("IPv6"), "{err}");
            // A flag of one address is not told of lists, nor of IPv6.
            let err = check_host_port("--advertise", list).unwrap_err();
            assert!(!err.contains("a list of addresses"), "{err}");
            assert!(!err.contains("IPv6"), "{err}");
        }
        assert_eq!(check_list_entry("--nodes", "a:1"), Ok(()));
        let err = check_host_port("--nodes", "nöde:7100").unwrap_err();
        assert!(
            err.ends_with("; 'ö' cannot be in a host name (letters, digits, '-', '.' and '_')"),
            "{err}"
        );
        for right in ["node_1:7100", "clusterlab-node-2:7100", "10.0.0.7:7100"] {
            assert_eq!(check_host_port("--peers", right), Ok(()), "{right}");
        }
    }

    #[test]
    fn a_side_port_may_not_share_the_serving_port() {
        let clashes =
            |side: &str, listen: &str| check_side_port("--metrics", side, listen).is_err();
        assert!(clashes("127.0.0.1:7100", "127.0.0.1:7100"));
        assert!(clashes("0.0.0.0:7100", "127.0.0.1:7100"));
        assert!(clashes("127.0.0.1:7100", "[::]:7100"));
        assert!(
            !clashes("0.0.0.0:7100", "[::1]:7100"),
            "IPv4's wildcard, IPv6's address"
        );
        assert!(clashes("node:7100", " node:7100"));
        assert!(!clashes("127.0.0.1:9100", "127.0.0.1:7100"));
        assert!(!clashes("127.0.0.2:7100", "127.0.0.1:7100"));
        assert!(!clashes("127.0.0.1:0", "127.0.0.1:0"));
        let refusal = check_side_port("--dashboard", "0.0.0.0:7000", "127.0.0.1:7000").unwrap_err();
        assert_eq!(
            refusal,
            "--dashboard 0.0.0.0:7000 would share a port with --listen 127.0.0.1:7000; give \
             --dashboard a port of its own (or turn it off with --dashboard off)"
        );
    }

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
    fn a_duration_says_how_to_write_one_and_stops_at_a_year() {
        assert_eq!(
            positive_duration("abc").unwrap_err(),
            r#""abc" is not a duration; write it like 500ms, 30s, 2m or 1h"#
        );
        assert_eq!(
            duration("30").unwrap_err(),
            r#""30" has no unit; write 30s (seconds), 30ms or 30m"#
        );
        assert_eq!(
            duration("-5").unwrap_err(),
            r#""-5" is not a duration; write it like 500ms, 30s, 2m or 1h"#
        );
        // The limit is what its message says: humantime's 1y.
        assert_eq!(duration("1y"), Ok(MAX_DURATION));
        assert!(duration("1y 1s").is_err());
        let error = positive_duration("100000000h").unwrap_err();
        assert_eq!(error, "100000000h is more than a year; choose 1y or less");
        assert!(duration_at_least(Duration::from_millis(10))("584000000000y").is_err());
    }

    /// What the flags of a small program are given: `CLUSTERLAB_` and the
    /// flag, with a subcommand's name between; a variable set by hand stays.
    #[test]
    fn every_flag_gets_a_variable_named_by_the_rule() {
        use clap::{Arg, CommandFactory as _};
        #[derive(clap::Parser)]
        struct Toy {
            #[arg(long)]
            data_dir: Option<String>,
            #[arg(long, env = "CLUSTERLAB_CERTS")]
            out: Option<String>,
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Load {
                #[arg(long)]
                duration: Option<String>,
                #[arg(long = "w")]
                write_quorum: Option<u32>,
                #[arg(long)]
                json: bool,
                key: String,
            },
        }
        let command = with_env(Toy::command());
        let env = |arg: &Arg| arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let top: Vec<_> = command.get_arguments().map(env).collect();
        assert_eq!(
            top,
            [
                Some("CLUSTERLAB_DATA_DIR".to_string()),
                Some("CLUSTERLAB_CERTS".to_string())
            ]
        );
        let load = command.find_subcommand("load").unwrap();
        let sub: Vec<_> = load.get_arguments().map(env).collect();
        assert_eq!(
            sub,
            [
                Some("CLUSTERLAB_LOAD_DURATION".to_string()),
                Some("CLUSTERLAB_LOAD_W".to_string()),
                Some("CLUSTERLAB_LOAD_JSON".to_string()),
                None
            ]
        );
        // A switch takes what people write in variables, on the command line too.
        let matches = command
            .clone()
            .try_get_matches_from(["toy", "load", "k", "--json"])
            .unwrap();
        let (_, load) = matches.subcommand().unwrap();
        assert!(load.get_flag("json"));
        // From its variable, a switch takes what people write there, and
        // names what it takes when it cannot read the value.
        assert_eq!(switch("Yes"), Ok(true));
        assert_eq!(switch("off"), Ok(false));
        assert_eq!(
            switch("maybe"),
            Err(r#""maybe" is neither on nor off; write 1 or 0, yes or no, on or off, true or false"#.into())
        );
        // A negative number is a value, for a flag and for an argument alike.
        let matches = command
            .clone()
            .try_get_matches_from(["toy", "load", "-5", "--duration", "-1"])
            .unwrap();
        let (_, load) = matches.subcommand().unwrap();
        assert_eq!(load.get_one::<String>("key").unwrap(), "-5");
        assert_eq!(load.get_one::<String>("duration").unwrap(), "-1");
        // Not a flag that takes no value, nor anything but a number.
        for args in [
            &["toy", "load", "k", "--json", "-1"][..],
            &["toy", "load", "-k"],
        ] {
            let error = command.clone().try_get_matches_from(args).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{args:?}"
            );
        }
    }

    /// A flag typed on the line, long or short, no longer reads its
    /// variable; one after a bare `--` is a value, and does not count.
    #[test]
    fn typed_flags_no_longer_read_their_variables() {
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Toy {
            #[arg(long, global = true)]
            timeout: Option<String>,
            #[arg(short, long, global = true)]
            verbose: bool,
            #[arg(long, global = true)]
            addr: Option<String>,
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Put { key: String },
        }
        let reading_variables = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            typed_flags_win(with_env(Toy::command()), &args)
                .get_arguments()
                .filter(|arg| arg.get_env().is_some())
                .map(|arg| arg.get_id().to_string())
                .collect::<Vec<_>>()
        };
        let all = ["timeout", "verbose", "addr"];
        assert_eq!(reading_variables(&["toy", "put", "k"]), all);
        assert_eq!(
            reading_variables(&["toy", "--timeout=5s", "put", "k", "-v"]),
            ["addr"]
        );
        assert_eq!(
            reading_variables(&["toy", "put", "--", "--timeout", "-v"]),
            all
        );
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
