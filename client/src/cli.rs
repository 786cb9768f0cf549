//! The command line. Every flag can also come from a `CLUSTERLAB_*` variable.

use std::{path::PathBuf, time::Duration};

use certs::{
    TlsMode,
    flags::{self, at_least_one, decimal, fraction, number_in, positive_duration, whole_number},
};
use clap::{Args, Parser, Subcommand};
use proto::{
    admin::MAX_FAULT_LATENCY,
    limits::{DEFAULT_SCAN_LIMIT, MAX_SCAN_LIMIT},
};

/// clusterlab: talk to a clusterlab cluster, and see what happened.
///
/// Every answer to put, get, delete and scan carries a trace: which node served
/// it and what each replica did. Add -v to see it, or --json for all of it.
#[derive(Debug, Parser)]
#[command(name = "clusterlab", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  clusterlab put greeting hello
  clusterlab -v get greeting
  clusterlab -v put greeting hi --w 3
  clusterlab status
  clusterlab --addr 127.0.0.1:7101,127.0.0.1:7102 check --duration 30s
  clusterlab put photo --value-file cat.jpg
  echo hi | clusterlab put note -
  clusterlab --identity reader whoami";

/// Where `--help` lists the flags every command takes, after the command's own.
const CONNECTION_HEADING: &str = "Connection options";
/// Where `--help` lists `--json` and `-v`, after the connection flags.
const OUTPUT_HEADING: &str = "Output options";

/// The shortest `--timeout`: a deadline below a millisecond ends before a
/// request could cross even a loopback TLS connection, so every request would
/// fail with DEADLINE_EXCEEDED, which `--timeout 1ms` shows as well.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Flags that apply to every command. `--help` lists them under their own
/// headings, so that a command's own flags come first, apart from them.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The balancer or node to talk to. Give several, comma-separated, and the
    /// first that answers is used; `check` spreads its work over all of them.
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION_HEADING,
        env = "CLUSTERLAB_ADDR",
        default_value = "127.0.0.1:7000",
        value_delimiter = ',',
        value_parser = trimmed
    )]
    pub addr: Vec<String>,

    /// The PKI directory made by `clusterlab-certs init`.
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION_HEADING,
        env = "CLUSTERLAB_CERTS",
        value_name = "DIR",
        default_value = certs::files::DEFAULT_DIR
    )]
    pub certs: PathBuf,

    /// Who to connect as: admin, writer, reader, or any NAME with NAME.pem in --certs
    /// (over mTLS; a cluster in plaintext mode checks no identity).
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION_HEADING,
        env = "CLUSTERLAB_IDENTITY",
        default_value = DEFAULT_IDENTITY,
        value_parser = certs::flags::identity
    )]
    pub identity: String,

    /// mtls (default), or plaintext for a cluster started in plaintext mode.
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION_HEADING,
        env = "CLUSTERLAB_TLS",
        value_enum,
        default_value_t
    )]
    pub tls: TlsMode,

    /// Print machine-readable JSON on stdout. A command that sends one
    /// request prints its failure there too, as {"error": {"code",
    /// "message", "trace"}} (its message still goes to stderr, and the exit
    /// status is 1), as do load and check that fail before their summary
    /// (no address answered); events does not.
    #[arg(long, global = true, help_heading = OUTPUT_HEADING, env = "CLUSTERLAB_JSON")]
    pub json: bool,

    /// Print the trace (who served it, what each replica did) of put, get,
    /// delete and scan on stderr, a failure's too. load and check send
    /// thousands and show none; the other commands' answers carry none.
    /// There is one level: -vv is -v.
    #[arg(
        short,
        long,
        global = true,
        help_heading = OUTPUT_HEADING,
        env = "CLUSTERLAB_VERBOSE",
        overrides_with = "verbose"
    )]
    pub verbose: bool,

    /// Give up on a request after this long (e.g. 500ms, 10s; 1ms or more).
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION_HEADING,
        env = "CLUSTERLAB_TIMEOUT",
        default_value = "10s",
        value_parser = flags::duration_at_least(MIN_TIMEOUT)
    )]
    pub timeout: Duration,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a value under a key.
    Put(PutArgs),
    /// Read a key's value: prints it byte for byte to a pipe or a file (at a terminal,
    /// with a newline added, and escaped where it would drive the terminal).
    /// Exits 1 if the key does not exist, saying so, or that it was deleted.
    Get(GetArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// List keys in order, with their values: one line each, with control
    /// characters escaped and backslashes doubled (--json for the exact bytes).
    Scan(ScanArgs),
    /// Show the TLS session and both identities: who you are, and who answered.
    Whoami,
    /// Show the cluster as the process asked sees it: a balancer's nodes (health,
    /// load, ejections) or a node's members (state, keys).
    Status,
    /// Ask grpc.health.v1 whether the server is SERVING; exits 0 if it is, 1 if
    /// not. A balancer serves only while a node is in rotation. Docker
    /// healthchecks use it (a scratch image has no curl or shell).
    Health,
    /// Write unique keys while you break things, then read every acknowledged one
    /// back: proves (or disproves) that nothing acknowledged was lost.
    ///
    /// Each writer puts a key, and on acknowledgement reads it back through
    /// another address if --addr lists more than one (a stale read if that
    /// returns an older version or nothing). At the end every acknowledged
    /// key is read back at the read quorum. At quorums that need not overlap
    /// (W + R <= N), or when no answer said the quorums, a key read back
    /// stale is read again 6 s after the writing ended, when anti-entropy
    /// has had time to copy it: found then, it counts as `late`, not lost.
    /// Exits 1 if any acknowledged write is lost or cannot be read back, or
    /// if not one write was acknowledged (nothing was checked; exits 2 if
    /// --duration was too short to make one).
    Check(CheckArgs),
    /// Follow the event feed of the process asked: ejections, returns and policy
    /// changes on a balancer; members joining, turning suspect or dead, repairs
    /// and faults on a node.
    Events(EventsArgs),
    /// Make a node misbehave on purpose: slow, flaky, frozen, or cut off from a peer.
    ///
    /// Each call replaces the node's faults; `--clear` removes them. Ask the
    /// balancer or any node: the client finds the one named in its status and
    /// sends the fault there.
    Fault(FaultArgs),
    /// Change a balancer's load-balancing policy while it runs.
    Policy(PolicyArgs),
    /// Watch the wire: one annotated line per TLS record (the hellos, and an
    /// alert sent before the server's hello, readable, with a 1-byte
    /// change_cipher_spec each way that carries nothing; TLS 1.3 encrypts
    /// all else, later alerts too) or, in plaintext mode, per HTTP/2 frame
    /// (method, text in the messages). Needs
    /// CAP_NET_RAW; in compose: docker compose run --rm --no-deps sniff.
    ///
    /// It talks to no server, so the connection flags (--addr, --certs,
    /// --identity, --tls, --timeout) do not apply, and it has no JSON form
    /// (--json is ignored; --pcap saves a capture for tools).
    Sniff(SniffArgs),
    /// Generate load with a live view: requests/s, errors, retries, latency
    /// percentiles and the share each node serves, then a summary. Exits 1
    /// if not one request succeeded, 2 if --duration was too short to send one.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Requests in flight at once, 1 to 4096 (with --rate: the most waiting
    /// for answers). Past 256 (what a server takes on one connection), more
    /// connections to each address, each carrying about 205 or fewer.
    #[arg(long, default_value_t = 16, value_parser = number_in(1..=4096u32))]
    pub concurrency: u32,
    /// How many distinct keys to spread the requests over.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one::<u64>)]
    pub keys: u64,
    /// Fraction of requests that are reads (the rest are writes), 0.0 to 1.0.
    /// Reads ask for keys this run has written (any key until it has written
    /// one): a key never written costs a read on every replica
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    pub read_ratio: f64,
    /// Bytes per written value, 0 to 1048576 (1 MiB).
    #[arg(long, default_value_t = 128, value_parser = number_in(0..=1_048_576u32))]
    pub value_size: u32,
    /// Send at this fixed rate (requests per second, at most 1000000) instead
    /// of as fast as the cluster answers: an open loop, like many independent
    /// users. Latency then counts from when each request was due, waiting for
    /// a slot included.
    #[arg(long, value_name = "RPS", value_parser = rate)]
    pub rate: Option<f64>,
}

/// Who the client connects as unless told otherwise.
pub const DEFAULT_IDENTITY: &str = "admin";

/// One entry of a list, without the spaces around it: `a:1, b:2` is two
/// addresses, as a person writing it means.
fn trimmed(text: &str) -> Result<String, String> {
    Ok(text.trim().to_string())
}

/// `--drop-peer`'s peer: a name. An empty one (`--drop-peer "$PEER"` with
/// the variable unset) reads on the wire as no peer, which asked for no
/// fault at all and cleared every fault the node had.
fn peer_name(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err(
            "an empty name is no peer; name one of the node's peers (`clusterlab \
                   status` lists them), or give --clear to remove every fault"
                .into(),
        ),
        name => Ok(name.to_string()),
    }
}

/// Parses `--w` and `--r`: at least one replica. (On the wire 0 means "the
/// cluster's default", which a person typing 0 would not expect.) The upper
/// bound is the cluster's replica count, which only the nodes know.
fn quorum(text: &str) -> Result<u32, String> {
    let allowed = "give 1 to the replica count (N, 3 unless the nodes were started with \
                   --replicas), or leave it out for the cluster's default";
    match whole_number(text) {
        Ok(0) => Err(format!(
            "a quorum of 0 replicas would wait for none; {allowed}"
        )),
        Ok(n) => Ok(n),
        // Below zero, or beyond any replica count: the range says more.
        Err(_) => Err(format!("{text} is no number of replicas; {allowed}")),
    }
}

/// Parses `fault --latency`: the node counts whole milliseconds, so a
/// latency above zero and under 1ms would be none at all, and 1.5ms would be
/// 1ms; and it adds at
/// most [`MAX_FAULT_LATENCY`], beyond which a node might as well be paused.
fn latency(text: &str) -> Result<Duration, String> {
    let latency = certs::flags::duration(text)?;
    if latency > MAX_FAULT_LATENCY {
        return Err(format!(
            "{text} is more than {MAX_FAULT_LATENCY:?}, the most latency a node adds; use \
             --pause to stop it answering"
        ));
    }
    if latency > Duration::ZERO && latency < Duration::from_millis(1) {
        return Err(format!(
            "{text} is less than a millisecond, the smallest latency a node adds; \
             choose 1ms or more (or --clear)"
        ));
    }
    let whole = Duration::from_millis(latency.as_millis() as u64);
    match latency == whole {
        true => Ok(latency),
        false => Err(format!(
            "{text} is not a whole number of milliseconds, which is what a node adds; \
             choose {}ms or {}ms",
            whole.as_millis(),
            whole.as_millis() + 1
        )),
    }
}

/// The highest `--rate`, in requests per second.
const MAX_RATE: f64 = 1_000_000.0;

fn rate(text: &str) -> Result<f64, String> {
    let value =
        decimal(text).map_err(|e| format!("{e}; choose more than 0 and at most {MAX_RATE}"))?;
    match value > 0.0 && value <= MAX_RATE {
        true => Ok(value),
        false => Err(format!(
            "{value} requests per second cannot be sent; choose more than 0 and at most {MAX_RATE}"
        )),
    }
}

#[derive(Debug, Args)]
pub struct SniffArgs {
    /// TCP ports to watch (either end), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "7000,7100",
          value_parser = number_in(1..=u16::MAX))]
    pub ports: Vec<u16>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many lines.
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub count: Option<usize>,
    /// Also write the captured frames to FILE (pcap), for Wireshark.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Show addresses only. By default each is named after its container, as
    /// Docker's DNS answers a reverse lookup (like tcpdump's -n).
    #[arg(long, short = 'n')]
    pub numeric: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy to switch to.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(proto::admin::POLICIES))]
    pub policy: String,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the recent history and exit instead of following the live feed.
    #[arg(long, overrides_with = "follow")]
    pub no_follow: bool,
    /// Follow the live feed (the default; after --no-follow, the last one given wins).
    #[arg(long, overrides_with = "no_follow")]
    pub follow: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("fault").required(true).multiple(true)
    .args(["latency", "error_rate", "pause", "drop_peer", "clear"])))]
// The node first, as with `put`'s key (see `PutArgs`).
#[command(
    override_usage = "clusterlab fault [OPTIONS] <NODE> [--latency <LATENCY>] [--error-rate <F>] \
                            [--pause] [--drop-peer <PEER>]\n       \
                            clusterlab fault [OPTIONS] <NODE> --clear"
)]
pub struct FaultArgs {
    /// The node to misbehave, by name (e.g. n2).
    pub node: String,
    /// Add this much delay to every request it serves (e.g. 200ms; whole
    /// milliseconds, at most 60s). Its peers' heartbeats are not delayed,
    /// nor failed by --error-rate: they keep it alive.
    #[arg(long, value_parser = latency)]
    pub latency: Option<Duration>,
    /// Fail this fraction of its requests with UNAVAILABLE (0.0 to 1.0).
    #[arg(long, value_name = "F", value_parser = fraction, allow_negative_numbers = true)]
    pub error_rate: Option<f64>,
    /// Stop answering: requests wait until the fault is cleared, or until a
    /// deadline ends them: the node's --request-timeout (10s by default), as
    /// never started, or the caller's sooner one, a write's outcome unknown
    /// to it. A node that shuts down meanwhile refuses them as never started.
    #[arg(long)]
    pub pause: bool,
    /// Cut the link between the node and this peer (another member it knows), both ways.
    /// One peer a node: a second call replaces the first cut, so to cut n1 off from n2
    /// and n3, cut n2 and n3 from n1 (`fault n2 --drop-peer n1`, `fault n3 --drop-peer n1`).
    #[arg(long, value_name = "PEER", value_parser = peer_name)]
    pub drop_peer: Option<String>,
    /// Remove every fault from the node.
    #[arg(long, conflicts_with_all = ["latency", "error_rate", "pause", "drop_peer"])]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How long to keep writing (e.g. 30s, 2m).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Writers working at once, 1 to 1024. Past 256 (what a server takes on
    /// one connection), more connections to each address, each carrying
    /// about 205 or fewer.
    #[arg(long, default_value_t = 8, value_parser = number_in(1..=1024u32))]
    pub concurrency: u32,
    /// Stop writing once this many writes were acknowledged (exactly this
    /// many, unless --duration ends first).
    #[arg(long, value_name = "N", value_parser = at_least_one::<u64>)]
    pub keys: Option<u64>,
    /// Bytes per value, up to 1048576 (1 MiB). Each value starts with its own key and `=`, so a value
    /// that turns up under the wrong key is caught; values are never shorter
    /// than that (about 30 bytes), whatever the size asked for.
    #[arg(long, default_value_t = 64, value_parser = number_in(1..=1_048_576u32))]
    pub value_size: u32,
    /// Write quorum for every write (default: the coordinating node's
    /// --write-quorum, else a majority).
    #[arg(long = "w", value_name = "N", value_parser = quorum)]
    pub write_quorum: Option<u32>,
    /// Read quorum for every read (default: the coordinating node's
    /// --read-quorum, else a majority).
    #[arg(long = "r", value_name = "N", value_parser = quorum)]
    pub read_quorum: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["value", "value_file"])))]
// clap would write the usage as `<VALUE|--value-file <FILE>> <KEY>`: the group
// first, which reads as if the value came before the key.
#[command(override_usage = "clusterlab put [OPTIONS] <KEY> <VALUE>\n       \
                            clusterlab put [OPTIONS] <KEY> --value-file <FILE>")]
pub struct PutArgs {
    /// The key: 1 to 1024 bytes of UTF-8.
    pub key: String,
    /// The value, or `-` to read it from standard input: at most 1048576 bytes
    /// (1 MiB), any bytes. Give it, or --value-file.
    pub value: Option<std::ffi::OsString>,
    /// Read the value from a file (for values too large for an argument).
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
    /// Write quorum: how many replicas must store the write before it is
    /// acknowledged, 1 to the replica count (default: the coordinating node's
    /// --write-quorum, else a majority).
    #[arg(long = "w", value_name = "N", value_parser = quorum)]
    pub write_quorum: Option<u32>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key to read: 1 to 1024 bytes of UTF-8.
    pub key: String,
    /// Read quorum: how many replicas must answer, 1 to the replica count
    /// (default: the coordinating node's --read-quorum, else a majority).
    #[arg(long = "r", value_name = "N", value_parser = quorum)]
    pub read_quorum: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key to delete: 1 to 1024 bytes of UTF-8.
    pub key: String,
    /// Write quorum for the delete, 1 to the replica count (default: the
    /// coordinating node's --write-quorum, else a majority).
    #[arg(long = "w", value_name = "N", value_parser = quorum)]
    pub write_quorum: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// At most this many entries (1 to 1000). A page of large values may hold
    /// fewer: it ends at about 2 MiB, and says how to go on.
    #[arg(long, default_value_t = DEFAULT_SCAN_LIMIT as u32,
          value_parser = number_in(1..=MAX_SCAN_LIMIT as u32))]
    pub limit: u32,
    /// Start after this key, to page through a long listing. Given more
    /// than once, the last counts: the next page's hint can be added to the
    /// command that printed it.
    #[arg(long, default_value = "", overrides_with = "start_after")]
    pub start_after: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// A count of 0 is refused as none at all.
    #[test]
    fn a_count_of_none_is_refused() {
        assert_eq!(
            at_least_one::<usize>("0"),
            Err("0 would be none; give 1 or more".into())
        );
        assert_eq!(at_least_one::<u64>("40"), Ok(40));
        let sniff = Cli::try_parse_from(["clusterlab", "sniff", "--count", "0"]);
        assert!(sniff.is_err(), "sniff --count 0 was taken");
    }

    /// Every quorum refused names the range, below zero and beyond any
    /// replica count too (not "the most is 4294967295").
    #[test]
    fn a_quorum_out_of_range_names_the_range() {
        assert_eq!(quorum("2"), Ok(2));
        for text in ["0", "-1", "99999999999", "two"] {
            let error = quorum(text).unwrap_err();
            assert!(
                error.ends_with(
                    "give 1 to the replica count (N, 3 unless the nodes were started \
                                 with --replicas), or leave it out for the cluster's default"
                ),
                "{text}: {error}"
            );
        }
    }

    /// clap's own checks of the definition: conflicting names, groups that
    /// name missing arguments, and the like.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Habits from other tools work: `-vv`, and `events --follow` (the
    /// default), the last of --follow and --no-follow winning.
    #[test]
    fn repeated_and_default_flags_are_taken() {
        let no_follow = |args: &[&str]| {
            let line = ["clusterlab", "-vv", "events"].iter().chain(args);
            let cli = Cli::try_parse_from(line).unwrap();
            assert!(cli.global.verbose);
            match cli.command {
                Command::Events(events) => events.no_follow,
                other => panic!("{other:?}"),
            }
        };
        assert!(!no_follow(&["--follow"]));
        assert!(no_follow(&["--follow", "--no-follow"]));
        assert!(!no_follow(&["--no-follow", "--follow"]));
    }

    #[test]
    fn put_and_fault_show_what_they_act_on_first() {
        let forms = [
            ("put", "clusterlab put [OPTIONS] <KEY> <VALUE>"),
            ("put", "clusterlab put [OPTIONS] <KEY> --value-file <FILE>"),
            ("fault", "clusterlab fault [OPTIONS] <NODE> [--latency"),
            ("fault", "clusterlab fault [OPTIONS] <NODE> --clear"),
        ];
        let mut cli = Cli::command();
        for (command, form) in forms {
            let usage = cli.find_subcommand_mut(command).unwrap().render_usage();
            assert!(usage.to_string().contains(form), "{usage}");
        }
    }

    /// A command's own flags come first in its `--help`; the ones every
    /// command takes follow under headings of their own. So `sniff --help`
    /// shows its flags apart from the connection flags that do not apply to it.
    #[test]
    fn the_flags_every_command_takes_are_listed_apart_from_its_own() {
        let mut cli = Cli::command();
        for arg in cli.get_arguments().filter(|arg| arg.is_global_set()) {
            assert!(
                arg.get_help_heading().is_some(),
                "--{} is listed with a command's own flags",
                arg.get_id()
            );
        }
        cli.build(); // gives each subcommand the global flags
        let sniff = cli.find_subcommand_mut("sniff").unwrap();
        let help = sniff.render_long_help().to_string();
        let at = |text: &str| {
            help.find(text)
                .unwrap_or_else(|| panic!("no {text:?} in:\n{help}"))
        };
        let order = [
            at("      --ports <PORTS>"),
            at(CONNECTION_HEADING),
            at("      --addr <ADDR>"),
            at(OUTPUT_HEADING),
            at("      --json"),
        ];
        assert!(order.is_sorted(), "{help}");
    }

    /// `--help` explains every argument of every command: none is listed
    /// with a blank line under it.
    #[test]
    fn every_argument_has_help() {
        fn without_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                without_help(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        without_help(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// Values that would do nothing, or fail every request, are refused before
    /// anything is sent, with the flag named and what it takes.
    #[test]
    fn values_that_cannot_work_are_refused_with_what_is_allowed() {
        let refused = [
            (&["--timeout", "0s", "get", "k"][..], "choose 1ms or more"),
            (
                &["--timeout", "1ns", "get", "k"],
                "too short; choose 1ms or more",
            ),
            (&["load", "--duration", "0s"], "above zero"),
            (&["check", "--duration", "0ms"], "above zero"),
            (&["sniff", "--duration", "0s"], "above zero"),
            (&["load", "--rate", "0"], "more than 0 and at most 1000000"),
            (&["load", "--keys", "0"], "0 would be none; give 1 or more"),
            (&["check", "--keys", "0"], "0 would be none; give 1 or more"),
            (&["--timeout", "100000000h", "get", "k"], "more than a year"),
            (
                &["fault", "n1", "--latency", "1ns"],
                "less than a millisecond",
            ),
            (
                &["fault", "n1", "--latency", "1.5ms"],
                "1.5ms is not a whole number of milliseconds, which is what a node adds; \
                 choose 1ms or 2ms",
            ),
            (
                &["fault", "n1", "--latency", "2m"],
                "more than 60s, the most latency a node adds; use --pause",
            ),
            (
                &["fault", "n1", "--error-rate", "-0.1"],
                "-0.1 is out of range; choose 0.0 to 1.0",
            ),
            (
                &["scan", "--limit", "0"],
                "0 is out of range; choose 1 to 1000",
            ),
            (&["scan", "--limit", "1001"], "choose 1 to 1000"),
            (
                &["load", "--concurrency", "many"],
                r#""many" is not a whole number; choose 1 to 4096"#,
            ),
            (
                &["load", "--read-ratio", "half"],
                r#""half" is not a number; choose 0.0 to 1.0"#,
            ),
            (
                &["load", "--rate", "1e"],
                r#""1e" is not a number; choose more"#,
            ),
            (&["put", "k", "v", "--w", "0"], "a quorum of 0 replicas"),
            (&["get", "k", "--r", "0"], "a quorum of 0 replicas"),
            (&["check", "--w", "0"], "a quorum of 0 replicas"),
            (
                &["fault", "n1", "--drop-peer", ""],
                "an empty name is no peer",
            ),
            (&["fault", "n1", "--drop-peer", " "], "or give --clear"),
        ];
        for (args, allowed) in refused {
            let line = std::iter::once("clusterlab").chain(args.iter().copied());
            let error = Cli::try_parse_from(line).unwrap_err().to_string();
            assert!(error.contains(allowed), "{args:?}: {error}");
            let flag = args.iter().find(|a| a.starts_with("--")).unwrap();
            assert!(
                error.contains(flag),
                "{args:?} does not name {flag}: {error}"
            );
        }
        // Below zero, as `clusterlab` reads its flags (a negative number is
        // a value, not a flag): the error names the range as well.
        for (args, why) in [
            (
                &["load", "--keys", "-5"][..],
                "-5 is below zero; give 1 or more",
            ),
            (
                &["sniff", "--count", "-1"],
                "-1 is below zero; give 1 or more",
            ),
        ] {
            let line = std::iter::once("clusterlab").chain(args.iter().copied());
            let error = certs::flags::with_env(Cli::command())
                .try_get_matches_from(line)
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{args:?}: {error}");
        }
        // A policy the balancer does not have is the command line's mistake,
        // answered with the four it has.
        let error = Cli::try_parse_from(["clusterlab", "policy", "bogus"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        for name in proto::admin::POLICIES {
            assert!(error.to_string().contains(name), "{error}");
        }
        // The same flags take the smallest sensible values.
        for args in [
            &["--timeout", "1ms", "get", "k"][..],
            &["load", "--duration", "1s", "--rate", "0.5", "--keys", "1"],
            &["scan", "--limit", "1000"],
            &["fault", "n1", "--latency", "60s"],
            &["policy", "key-affinity"],
        ] {
            let line = std::iter::once("clusterlab").chain(args.iter().copied());
            assert!(Cli::try_parse_from(line).is_ok(), "{args:?}");
        }
    }
}
