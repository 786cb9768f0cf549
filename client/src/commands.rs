//! One function per command. Each returns `Err(Failure)` to fail: exit
//! status 1, or 2 for a mistake in the command line ([`Failure::usage`]).

use std::{
    io::{IsTerminal, Read, Write},
    os::unix::ffi::OsStringExt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use proto::{
    DeleteRequest, EventsRequest, GetRequest, MemberStatus, PutRequest, ScanRequest,
    SetFaultRequest, SetPolicyRequest, StatusRequest, StatusResponse, Trace, WhoAmIRequest,
    limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES},
    member::State,
};
use serde_json::{Value, json};

use crate::{
    Failure,
    cli::{
        Cli, Command, DeleteArgs, EventsArgs, FaultArgs, GetArgs, Global, PolicyArgs, PutArgs,
        ScanArgs, SniffArgs,
    },
    connect::Connection,
    failure, render,
    stop::StopSignals,
};

/// Runs the command the command line asked for.
///
/// The commands that run until stopped (`events` following its feed, `sniff`,
/// `load`, `check`) stop cleanly on Ctrl-C or SIGTERM ([`StopSignals`]). The
/// others keep the signals' default action: killed by Ctrl-C, as a shell loop
/// around them expects, and bounded by `--timeout` in a container.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    match cli.command {
        Command::Sniff(args) => {
            // It watches the wire rather than talking to a server: of the
            // global flags, only --json could mean something. Said, not
            // refused: CLUSTERLAB_JSON=1 may be set for every command.
            if global.json {
                eprintln!(
                    "note: sniff prints one line per TLS record or HTTP/2 frame and has no JSON form; \
                     --pcap FILE saves the capture for tools (Wireshark, tshark -T json)"
                );
            }
            sniff_until_stopped(args, StopSignals::watch()?).await
        }
        // They stop gracefully: what was done so far is reported. One that
        // fails before its report (no address answered) has no summary to
        // print, so --json prints the failure as a one-request command does.
        Command::Check(args) => {
            let done = crate::check::run(&global, args, StopSignals::watch()?).await;
            json_failure_too(&global, done)
        }
        Command::Load(args) => {
            let done = crate::load::run(&global, args, StopSignals::watch()?).await;
            json_failure_too(&global, done)
        }
        Command::Events(args) if !args.no_follow => {
            let mut stops = StopSignals::watch()?;
            // Stopped before it connects, it has followed nothing: a failure.
            let conn = crate::stop::connect_unless_stopped(&global, &mut stops).await?;
            tokio::select! {
                done = events(conn, &global, args) => done,
                // Following the feed lasts until a person stops it.
                _ = stops.recv() => Ok(()),
            }
        }
        command => one_shot(&global, command).await,
    }
}

/// The commands that send a request (or open a feed) and print the answer.
async fn one_shot(global: &Global, command: Command) -> Result<(), Failure> {
    // An event history prints as it comes: a failure after some events is
    // not one more of them.
    let one_answer = !matches!(command, Command::Events(_));
    let Err(failure) = one_request(global, command).await else {
        return Ok(());
    };
    // With -v, a failure's trace too (before the failure's own line): which
    // nodes the balancer tried, and what the replicas did.
    show_trace(global, failure.trace.as_deref());
    match one_answer {
        true => json_failure_too(global, Err(failure)),
        false => Err(failure),
    }
}

/// With --json, prints a failure with a status code as an object on stdout
/// too, `{"error": {"code", "message", "trace"}}`, unless the command's
/// report said it (`reported`); its message goes to stderr as ever. Not for
/// a failure on this machine or a mistake in the command line (no code).
/// Printed as a report is: a reader that left makes it no less a failure.
fn json_failure_too(global: &Global, done: Result<(), Failure>) -> Result<(), Failure> {
    match done {
        Err(failure) if global.json && !failure.code.is_empty() && !failure.reported => {
            let object = json!({"error": {
                "code": failure.code,
                "message": failure.message,
                "trace": render::trace_json(failure.trace.as_deref()),
            }});
            failure::report_then(Err(failure), || print_json(&object))
        }
        done => done,
    }
}

/// [`one_shot`]'s command, run.
async fn one_request(global: &Global, command: Command) -> Result<(), Failure> {
    match command {
        Command::Put(args) => put(global, args).await,
        Command::Get(args) => get(global, args).await,
        Command::Delete(args) => delete(global, args).await,
        Command::Scan(args) => scan(global, args).await,
        Command::Whoami => whoami(global).await,
        Command::Status => status(global).await,
        Command::Health => health(global).await,
        Command::Events(args) => events(Connection::open(global).await?, global, args).await,
        Command::Fault(args) => fault(global, args).await,
        Command::Policy(args) => policy(global, args).await,
        Command::Sniff(_) | Command::Check(_) | Command::Load(_) => {
            unreachable!("run() runs the commands that run until stopped")
        }
    }
}

/// Sniffs (a blocking loop over a raw socket) until its `--duration` or
/// `--count` is reached, or a person stops it; either way, it ends cleanly.
async fn sniff_until_stopped(args: SniffArgs, mut stops: StopSignals) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    let sniffing = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || crate::sniff::run(args, &stop)
    });
    tokio::pin!(sniffing);
    let done = tokio::select! {
        done = &mut sniffing => done,
        _ = stops.recv() => {
            stop.store(true, Ordering::Relaxed);
            sniffing.await
        }
    };
    done.map_err(|e| Failure::local(format!("the sniffer failed: {e}")))?
}

/// Wraps a message in a request with the `--timeout` deadline (sent to the server
/// as `grpc-timeout`, so it gives up too).
pub(crate) fn request<T>(global: &Global, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(global.timeout);
    request
}

/// [`request`], for a write: it also carries its deadline as a moment, so that
/// a node stopped with it unread does not apply it when it wakes, after this
/// client has given up on it ([`proto::deadline::WRITE_BY_HEADER`]).
pub(crate) fn write_request<T>(global: &Global, message: T) -> tonic::Request<T> {
    let mut request = request(global, message);
    let by = proto::deadline::write_by(global.timeout);
    request.metadata_mut().insert(
        proto::deadline::WRITE_BY_HEADER,
        by.to_string().parse().expect("digits"),
    );
    request
}

/// With `-v`, the trace as one line on stderr.
fn show_trace(global: &Global, trace: Option<&Trace>) {
    if let (true, Some(trace)) = (global.verbose, trace) {
        eprintln!("{}", render::trace_line(trace));
    }
}

fn print_json(value: &Value) {
    println!("{value}");
}

/// The value to put: the argument, a file's contents, or standard input's.
///
/// Read up to one byte past the limit and no further: a value from
/// `/dev/zero`, `yes |` or a film would otherwise fill the memory before the
/// server could refuse it. Over the limit, nothing is sent.
fn read_value(args: &PutArgs) -> Result<Vec<u8>, Failure> {
    let read_failed =
        |what: &str, e: std::io::Error| Failure::usage(format!("cannot read {what}: {e}"));
    let (what, value) = match (&args.value, &args.value_file) {
        (_, Some(path)) => {
            let what = path.display().to_string();
            let value = std::fs::File::open(path)
                .and_then(read_at_most_the_limit)
                .map_err(|e| read_failed(&what, e))?;
            (what, value)
        }
        (Some(dash), None) if dash == "-" => {
            let what = "standard input".to_string();
            let value = read_at_most_the_limit(std::io::stdin().lock())
                .map_err(|e| read_failed(&what, e))?;
            (what, value)
        }
        // An argument is bytes, not necessarily UTF-8, as a value is.
        (Some(value), None) => ("the value".to_string(), value.clone().into_vec()),
        (None, None) => unreachable!("clap requires a value source"),
    };
    match value.len() > MAX_VALUE_BYTES {
        true => Err(Failure::usage(format!(
            "{what} holds more than {MAX_VALUE_BYTES} bytes (1 MiB), the most a value may \
             hold; nothing was sent"
        ))),
        false => Ok(value),
    }
}

/// Refuses a key the nodes would refuse (empty, or over [`MAX_KEY_BYTES`])
/// before connecting: a usage error, as an oversized value is.
fn check_key(key: &str) -> Result<(), Failure> {
    match key.len() {
        0 => Err(Failure::usage(format!(
            "the key is empty; give a key of 1 to {MAX_KEY_BYTES} bytes of UTF-8"
        ))),
        n if n > MAX_KEY_BYTES => Err(Failure::usage(format!(
            "the key is {n} bytes, more than {MAX_KEY_BYTES} (1 KiB), the most a key may \
             hold; nothing was sent"
        ))),
        _ => Ok(()),
    }
}

/// Everything `source` holds, or the first [`MAX_VALUE_BYTES`] + 1 bytes of it.
fn read_at_most_the_limit(source: impl Read) -> std::io::Result<Vec<u8>> {
    let mut value = Vec::new();
    source
        .take(MAX_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut value)?;
    Ok(value)
}

async fn put(global: &Global, args: PutArgs) -> Result<(), Failure> {
    check_key(&args.key)?;
    let value = read_value(&args)?;
    let size = value.len();
    let conn = Connection::open(global).await?;
    let response = conn
        .key_value()
        .put(write_request(
            global,
            PutRequest {
                key: args.key.clone(),
                value,
                write_quorum: args.write_quorum.unwrap_or(0),
                request_id: proto::new_request_id(),
            },
        ))
        .await;
    let response = conn.check_write(response).await?;
    let written = Written {
        key: &args.key,
        version: response.version.as_ref(),
        trace: response.trace.as_ref(),
    };
    written.report(global, json!({"bytes": size}), |version| {
        format!(
            "OK {} ({}) version {version}",
            render::one_line(args.key.as_bytes()),
            render::counted(size as u64, "byte", "bytes")
        )
    });
    Ok(())
}

/// A write or delete the cluster acknowledged, to be reported.
struct Written<'a> {
    key: &'a str,
    version: Option<&'a proto::Version>,
    trace: Option<&'a Trace>,
}

impl Written<'_> {
    /// Prints the trace (with -v), then JSON (`key`, `version`, `trace`, plus
    /// `extra`'s fields) or the line `human` makes from the version.
    fn report(&self, global: &Global, extra: Value, human: impl FnOnce(String) -> String) {
        show_trace(global, self.trace);
        if global.json {
            let mut object = json!({
                "key": self.key,
                "version": render::version_json(self.version),
                "trace": render::trace_json(self.trace),
            });
            if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
                object.extend(extra);
            }
            print_json(&object);
        } else {
            println!(
                "{}",
                human(self.version.map(render::version).unwrap_or_default())
            );
        }
    }
}

async fn get(global: &Global, args: GetArgs) -> Result<(), Failure> {
    check_key(&args.key)?;
    let conn = Connection::open(global).await?;
    let response = conn
        .key_value()
        .get(request(
            global,
            GetRequest {
                key: args.key.clone(),
                read_quorum: args.read_quorum.unwrap_or(0),
            },
        ))
        .await;
    let response = conn.check(response).await?;
    show_trace(global, response.trace.as_ref());
    let verdict = match (&response.found, &response.version) {
        (true, _) => Ok(()),
        (false, Some(deleted)) => Err(format!(
            "was deleted (its tombstone has version {})",
            render::version(deleted)
        )),
        (false, None) => Err("does not exist".to_string()),
    }
    .map_err(|why| Failure::new("NOT_FOUND", format!("key {:?} {why}", args.key)));
    if global.json {
        let mut object = serde_json::Map::new();
        object.insert("key".into(), args.key.clone().into());
        object.insert("found".into(), response.found.into());
        if response.found {
            object.extend(render::value_fields(&response.value));
        } else {
            object.insert("value".into(), Value::Null);
        }
        object.insert(
            "version".into(),
            render::version_json(response.version.as_ref()),
        );
        object.insert("trace".into(), render::trace_json(response.trace.as_ref()));
        // Not found is the exit status, whether or not its reader stays.
        return failure::report_then(verdict, || print_json(&Value::Object(object)));
    }
    verdict?;
    let at_a_terminal = std::io::stdout().is_terminal();
    let shown = match at_a_terminal {
        true => for_a_terminal(&response.value),
        false => std::borrow::Cow::Borrowed(&response.value[..]),
    };
    if *shown != *response.value {
        let _ = writeln!(
            std::io::stderr(),
            "note: the value holds bytes a terminal would act on or cannot show, escaped \
             here; a pipe or a file gets them as they are (clusterlab get KEY > FILE)"
        );
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(&shown).and_then(|()| {
        // At a terminal, end the line so the prompt does not glue onto the value.
        if at_a_terminal && !shown.ends_with(b"\n") {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()
    });
    match written {
        // `get big | head -c 10`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::local(format!(
            "cannot write the value to stdout: {e}"
        ))),
        Ok(()) => Ok(()),
    }
}

/// A value as a terminal may be given it: control characters (an escape
/// sequence that clears the screen, retitles the window or writes the
/// clipboard) escaped, but line breaks and tabs ([`proto::text::as_written`]);
/// bytes that are not UTF-8 as `\x..`.
fn for_a_terminal(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut shown = String::new();
    for chunk in value.utf8_chunks() {
        shown.push_str(&proto::text::as_written(chunk.valid()));
        for byte in chunk.invalid() {
            shown.push_str(&format!("\\x{byte:02x}"));
        }
    }
    match shown.as_bytes() == value {
        true => std::borrow::Cow::Borrowed(value),
        false => std::borrow::Cow::Owned(shown.into_bytes()),
    }
}

async fn delete(global: &Global, args: DeleteArgs) -> Result<(), Failure> {
    check_key(&args.key)?;
    let conn = Connection::open(global).await?;
    let response = conn
        .key_value()
        .delete(write_request(
            global,
            DeleteRequest {
                key: args.key.clone(),
                write_quorum: args.write_quorum.unwrap_or(0),
                request_id: proto::new_request_id(),
            },
        ))
        .await;
    let response = conn.check_write(response).await?;
    let written = Written {
        key: &args.key,
        version: response.version.as_ref(),
        trace: response.trace.as_ref(),
    };
    written.report(global, json!({}), |version| {
        format!(
            "OK deleted {} (tombstone version {version})",
            render::one_line(args.key.as_bytes())
        )
    });
    Ok(())
}

async fn scan(global: &Global, args: ScanArgs) -> Result<(), Failure> {
    let conn = Connection::open(global).await?;
    let response = conn
        .key_value()
        .scan(request(
            global,
            ScanRequest {
                prefix: args.prefix,
                limit: args.limit,
                start_after: args.start_after,
            },
        ))
        .await;
    let response = conn.check(response).await?;
    show_trace(global, response.trace.as_ref());
    if global.json {
        let entries: Vec<Value> = response
            .entries
            .iter()
            .map(|e| {
                let mut object = serde_json::Map::new();
                object.insert("key".into(), e.key.clone().into());
                object.extend(render::value_fields(&e.value));
                object.insert("version".into(), render::version_json(e.version.as_ref()));
                Value::Object(object)
            })
            .collect();
        print_json(&json!({
            "entries": entries,
            "more": response.more,
            // Where the next page begins (`scan --start-after`), when `more`.
            "next_start_after": response.more.then(|| next_start_after(&response)),
            "trace": render::trace_json(response.trace.as_ref()),
        }));
    } else {
        for entry in &response.entries {
            let key = render::one_line(entry.key.as_bytes());
            println!("{key}\t{}", render::one_line(&entry.value));
        }
        if response.more {
            eprintln!("{}", next_page_hint(next_start_after(&response)));
        }
    }
    Ok(())
}

/// Where a scan's next page begins: where the node says, not the last
/// entry (a page may hold none, only deleted keys looked through, and the
/// rest begins after those), unless it said nothing (a node of an older
/// build), which would mean the beginning again.
fn next_start_after(response: &proto::ScanResponse) -> &str {
    match response.next_start_after.as_str() {
        "" => response.entries.last().map_or("", |e| e.key.as_str()),
        next => next,
    }
}

async fn whoami(global: &Global) -> Result<(), Failure> {
    let conn = Connection::open(global).await?;
    let seen = conn
        .admin()
        .who_am_i(request(global, WhoAmIRequest {}))
        .await;
    let seen = conn.check(seen).await?;
    let session = conn.session.lock().expect("session slot poisoned").clone();
    let me = conn.identity.as_ref().map(|i| i.uri()).unwrap_or_default();
    let server_identity = session
        .as_ref()
        .map(|s| s.identity.uri())
        .unwrap_or_default();
    let (version, suite) = session
        .as_ref()
        .map(|s| (s.tls.version.clone(), s.tls.cipher_suite.clone()))
        .unwrap_or_default();
    if global.json {
        // Over plaintext there is no TLS and no identity: null, not "".
        let tls = |value: String| (!conn.plaintext).then_some(value);
        print_json(&json!({
            "addr": conn.addr,
            "plaintext": conn.plaintext,
            "tls_version": tls(version),
            "cipher_suite": tls(suite),
            "client_identity": tls(me),
            "server_identity": tls(server_identity),
            "server_name": seen.server_name,
            "server_saw": {
                "identity": tls(seen.peer_identity),
                "addr": seen.peer_addr,
                "tls_version": tls(seen.tls_version),
                "cipher_suite": tls(seen.cipher_suite),
            },
            "allowed": seen.allowed,
        }));
        return Ok(());
    }
    if conn.plaintext {
        println!(
            "connection   {} in PLAINTEXT: no encryption, no identities",
            conn.addr
        );
        println!("server       {}", render::printable(&seen.server_name));
        return Ok(());
    }
    println!(
        "connection   {} over {version}, cipher suite {suite}",
        conn.addr
    );
    println!("you          {me}");
    // The server's words, shown not obeyed.
    let said = render::printable;
    println!(
        "server       {server_identity} (process {})",
        said(&seen.server_name)
    );
    println!(
        "server saw   {} from {}",
        said(&seen.peer_identity),
        said(&seen.peer_addr)
    );
    if !seen.allowed.is_empty() {
        println!("you may call {}", said(&seen.allowed.join(", ")));
    }
    Ok(())
}

async fn status(global: &Global) -> Result<(), Failure> {
    let conn = Connection::open(global).await?;
    let status = conn.admin().status(request(global, StatusRequest {})).await;
    let status = conn.check(status).await?;
    match status.role.as_str() {
        "balancer" => print_balancer_status(global, &status),
        _ => print_node_status(global, &status),
    }
    Ok(())
}

fn print_balancer_status(global: &Global, status: &StatusResponse) {
    match global.json {
        true => print_json(&proto::json::status(status)),
        false => print!("{}", balancer_status_text(status)),
    }
}

/// A balancer's status for people: totals, then a row per node, with why a
/// node is out of rotation under it.
fn balancer_status_text(status: &StatusResponse) -> String {
    let status = &for_the_terminal(status);
    let mut out = format!("{} (balancer), policy {}\n", status.name, status.policy);
    let totals = format!(
        "{}, {}, {} by the budget, {}",
        render::counted(status.requests, "request", "requests"),
        render::counted(status.retries, "retry", "retries"),
        render::counted(status.retries_refused, "retry refused", "retries refused"),
        render::counted(status.denied, "call denied", "calls denied"),
    );
    out += &render::wrapped(&totals, 2, 4);
    // Each column as wide as its widest cell, one space between: compose's
    // names and addresses (`clusterlab-node-1`, `172.18.0.3:7100`) fit 80.
    let rows: Vec<[String; 7]> = status
        .backends
        .iter()
        .map(|b| {
            [
                b.name.clone(),
                b.addr.clone(),
                b.health.clone(),
                b.in_flight.to_string(),
                b.requests.to_string(),
                b.errors.to_string(),
                b.ejections.to_string(),
            ]
        })
        .collect();
    let headings = [
        "NODE",
        "ADDRESS",
        "HEALTH",
        "IN-FLIGHT",
        "REQUESTS",
        "ERRORS",
        "EJECTIONS",
    ];
    let widths: Vec<usize> = (0..headings.len())
        .map(|i| column_width(rows.iter().map(|row| row[i].as_str()), headings[i]))
        .collect();
    let line = |cells: [&str; 7]| {
        let [name, addr, health, numbers @ ..] = cells;
        let mut line = format!(
            "  {name:<0$} {addr:<1$} {health:<2$}",
            widths[0], widths[1], widths[2]
        );
        for (number, width) in numbers.iter().zip(&widths[3..]) {
            line += &format!(" {number:>width$}");
        }
        line + "\n"
    };
    out += &line(headings);
    for (b, row) in status.backends.iter().zip(&rows) {
        out += &line(row.each_ref().map(String::as_str));
        if !b.reason.is_empty() {
            let why = match b.health.as_str() {
                "ejected" => "ejected because",
                _ => "not in rotation yet",
            };
            out += &render::wrapped(&format!("{why}: {}", b.reason), 4, 6);
        }
    }
    out
}

/// `status` with every word a server chose escaped for the terminal, as
/// events are ([`proto::text::one_line`]): a member's name (as its probe
/// answer gave it), an address, a reason, a fault, the store's words. Before
/// the columns are measured, so that a row stays in line, and a name with a
/// line break in it cannot pass for a row of its own.
fn for_the_terminal(status: &StatusResponse) -> StatusResponse {
    let mut status = status.clone();
    let escape = |text: &mut String| *text = proto::text::one_line(text);
    for text in [
        &mut status.name,
        &mut status.role,
        &mut status.policy,
        &mut status.fault,
        &mut status.store,
    ] {
        escape(text);
    }
    status.unanswered.iter_mut().for_each(escape);
    for m in &mut status.members {
        escape(&mut m.name);
        escape(&mut m.addr);
        if let Some(link) = &mut m.link {
            escape(&mut link.tls_version);
            escape(&mut link.cipher_suite);
            escape(&mut link.identity);
        }
    }
    for b in &mut status.backends {
        for text in [&mut b.name, &mut b.addr, &mut b.health, &mut b.reason] {
            escape(text);
        }
    }
    status
}

/// The width of a table column: its longest cell, or its heading.
fn column_width<'a>(cells: impl Iterator<Item = &'a str>, heading: &str) -> usize {
    cells.map(str::len).max().unwrap_or(0).max(heading.len())
}

fn print_node_status(global: &Global, status: &StatusResponse) {
    match global.json {
        true => print_json(&proto::json::status(status)),
        false => print!("{}", node_status_text(status)),
    }
}

/// N as a key gets it ([`StatusResponse::copies`]), which the quorums beside
/// it are a majority of, and why when it is below `--replicas`.
fn copies(status: &StatusResponse) -> String {
    let copies = status.copies();
    match copies < status.replicas {
        false => format!("N={}", status.replicas),
        true => format!(
            "N={copies} (--replicas {}, but {})",
            status.replicas,
            render::counted(u64::from(copies), "member", "members")
        ),
    }
}

/// A node's status for people: what it sees, then a row per member.
fn node_status_text(answered: &StatusResponse) -> String {
    let status = &for_the_terminal(answered);
    let sees = format!(
        "{} (node) sees {}; {} W={} R={}",
        status.name,
        members_by_state(&status.members),
        copies(status),
        status.write_quorum,
        status.read_quorum,
    );
    let mut out = render::wrapped(&sees, 0, 2);
    let counts = format!(
        "{} received; {} under-replicated; {}",
        render::counted(status.requests, "request", "requests"),
        render::counted(status.under_replicated, "key", "keys"),
        render::counted(status.denied, "call denied", "calls denied"),
    );
    out += &render::wrapped(&counts, 2, 4);
    if !status.fault.is_empty() {
        out += &render::wrapped(&format!("fault injected: {}", status.fault), 2, 4);
        // On a line of its own, never wrapped: to copy whole. The name as
        // the node gave it: `shell_word` shows what it must, to paste.
        out += &format!(
            "    clear it: clusterlab fault {} --clear\n",
            certs::flags::shell_word(&answered.name)
        );
    }
    if !status.store.is_empty() {
        out += &render::wrapped(&format!("store: {}", status.store), 2, 4);
    }
    // Each column as wide as its widest cell, one space between: compose's
    // names and addresses (`clusterlab-node-1:7100`) fit 80, with a link
    // label as long as "TLSv1.3 (last session)".
    let width = column_width(status.members.iter().map(|m| m.addr.as_str()), "ADDRESS");
    // One more for the `*` that marks the member that answered.
    let names = column_width(status.members.iter().map(|m| m.name.as_str()), "NAME") + 1;
    let states = column_width(
        status.members.iter().map(|m| State::label_of(m.state)),
        "STATE",
    );
    let keys: Vec<String> = status.members.iter().map(|m| m.keys.to_string()).collect();
    let counts = column_width(keys.iter().map(String::as_str), "KEYS");
    out += &format!(
        "  {:<names$} {:<width$} {:<states$} {:>counts$} LINK\n",
        "NAME", "ADDRESS", "STATE", "KEYS"
    );
    for (m, keys) in status.members.iter().zip(&keys) {
        let name = if m.is_self {
            format!("{}*", m.name)
        } else {
            m.name.clone()
        };
        let line = format!(
            "  {:<names$} {:<width$} {:<states$} {:>counts$} {}",
            name,
            m.addr,
            State::label_of(m.state),
            keys,
            link_label(m)
        );
        out += line.trim_end();
        out.push('\n');
    }
    if !status.unanswered.is_empty() {
        let unanswered = format!(
            "never answered: {} (probed; no node there has answered this one yet)",
            status.unanswered.join(", ")
        );
        out += &render::wrapped(&unanswered, 2, 4);
    }
    let legend = format!(
        "(* answered this request; key counts include tombstones, and are the last known for \
         a member not alive; LINK: how {} reaches each member)",
        status.name
    );
    out + &render::wrapped(&legend, 2, 3)
}

/// "3 members, all alive", or "3 members: 2 alive, 1 dead": a dead member is
/// still a member (it holds its share of the keys, and may come back), but a
/// count alone would hide that it is down.
fn members_by_state(members: &[MemberStatus]) -> String {
    let total = render::counted(members.len() as u64, "member", "members");
    let mut by_state: Vec<(&str, usize)> = Vec::new();
    for member in members {
        let label = State::label_of(member.state);
        match by_state.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => by_state.push((label, 1)),
        }
    }
    match by_state.as_slice() {
        [] => total,
        [("alive", _)] => format!("{total}, all alive"),
        _ => {
            // Alive first, then suspect, dead and any other.
            let rank = |label: &str| {
                ["alive", "suspect", "dead"]
                    .iter()
                    .position(|l| *l == label)
            };
            by_state.sort_by_key(|(label, _)| rank(label).unwrap_or(usize::MAX));
            let counts: Vec<String> = by_state.iter().map(|(l, n)| format!("{n} {l}")).collect();
            format!("{total}: {}", counts.join(", "))
        }
    }
}

/// How the answering node reaches a member: the TLS version, `PLAINTEXT`, or
/// `not yet` before the first connection. For a member that is not alive, the
/// link shown is the last session it had, and the label says so.
fn link_label(member: &MemberStatus) -> String {
    let label = match &member.link {
        _ if member.is_self => return String::new(),
        None => return "not yet".to_string(),
        Some(link) if link.tls_version.is_empty() => "PLAINTEXT",
        Some(link) => &link.tls_version,
    };
    if member.state == State::Alive as i32 {
        label.to_string()
    } else {
        format!("{label} (last session)")
    }
}

async fn events(conn: Connection, global: &Global, args: EventsArgs) -> Result<(), Failure> {
    let json = global.json;
    let mut admin = conn.admin();
    let wanted = EventsRequest {
        history_only: args.no_follow,
    };
    // Following the feed lasts until Ctrl-C (see run()), with no deadline;
    // the history alone is a request like the others, within --timeout.
    let wanted = match args.no_follow {
        true => request(global, wanted),
        false => tonic::Request::new(wanted),
    };
    let stream = admin.events(wanted).await;
    let mut stream = conn.check(stream).await?;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            // The process closed its feed (its last event says it is stopping).
            Ok(None) => return Ok(()),
            // The connection broke mid-feed: h2's words alone say little.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unknown | tonic::Code::Unavailable
                ) =>
            {
                let why = match still_accepts(&conn.addr).await {
                    true => {
                        ": it stopped answering (a ping went unanswered); the process may be \
                         stopped or paused (kill -STOP, docker pause), or hung, or the network \
                         between us failed"
                    }
                    false => {
                        " without its last event: the process was killed, or the network \
                         between us failed"
                    }
                };
                return Err(Failure::new(
                    "UNAVAILABLE",
                    format!(
                        "the feed from {} broke off{why} ({})",
                        conn.addr,
                        status.message()
                    ),
                ));
            }
            Err(status) => return Err(conn.failure(&status).await),
        };
        if json {
            print_json(&proto::json::event(&event));
        } else {
            // A server's words: one line, no escape sequences.
            println!(
                "{} {:<8} {:<16} {}",
                render::time_of_day(event.at_unix_ms),
                render::one_line(event.source.as_bytes()),
                render::one_line(event.kind.as_bytes()),
                render::one_line(event.message.as_bytes())
            );
        }
    }
}

/// Whether something still accepts connections at `addr`, as a process that
/// stopped answering does (stopped, paused or hung: the kernel still takes its
/// connections), where a killed one is refused, or gone with its container.
/// Its error alone does not tell: over plaintext, h2 reports a connection the
/// node closed as it reports one we gave up on for an unanswered ping.
///
/// Asked twice, a moment apart: a killed process's sockets close one by one,
/// and its listening socket may outlast the connection we noticed closing.
async fn still_accepts(addr: &str) -> bool {
    let accepts = || async {
        let connect = tokio::net::TcpStream::connect(addr);
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        )
    };
    if !accepts().await {
        return false;
    }
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    accepts().await
}

async fn fault(global: &Global, args: FaultArgs) -> Result<(), Failure> {
    let mut fault = SetFaultRequest {
        node: args.node.clone(),
        latency_ms: args.latency.map_or(0, |d| d.as_millis() as u64),
        error_rate: args.error_rate.unwrap_or(0.0),
        pause: args.pause,
        drop_peer: args.drop_peer.unwrap_or_default(),
        clear: args.clear,
    };
    let mut conn = Connection::open(global).await?;
    // A node takes faults for itself only, and a balancer takes none: find the
    // named node through the view of whatever we reached.
    let status = conn.admin().status(request(global, StatusRequest {})).await;
    let status = conn
        .check(status)
        .await
        .map_err(|f| match f.code.as_str() {
            "PERMISSION_DENIED" => Failure::new(
                "PERMISSION_DENIED",
                format!(
                    "{}; `fault` asks for the cluster's status first, to find {}, and setting \
                 a fault (Admin/SetFault) also takes the admin identity (--identity admin)",
                    f.message, args.node
                ),
            ),
            _ => f,
        })?;
    if let Some(target) = node_address(&status, &args.node)? {
        // The node checks that the fault is for it by name; given by its
        // address, it is asked by the name it is known by, or by none.
        fault.node = target.name;
        conn = Connection::open_to(global, &target.addr)
            .await
            .map_err(|f| f.reaching(&args.node, &status.name))?;
    }
    let response = conn.admin().set_fault(request(global, fault)).await;
    let response = conn.check(response).await?;
    if global.json {
        print_json(&json!({"node": args.node, "active": response.active}));
    } else {
        println!("{}", fault_line(&args.node, &response.active));
    }
    Ok(())
}

/// A node to send a fault to.
#[derive(Debug, PartialEq)]
struct Target {
    addr: String,
    /// Its name, or empty while the process that listed it does not know it
    /// (a balancer lists a node by its address until its health check says).
    name: String,
}

/// Where to send a fault for node `name`, as seen by the process that gave
/// `status`: `None` if that process is the node itself; otherwise the address a
/// node knows it by among its members, or a balancer among its nodes (by name,
/// or by address, the way to name one whose name is not known yet).
fn node_address(status: &StatusResponse, name: &str) -> Result<Option<Target>, Failure> {
    let known: Vec<(&str, &str)> = match status.role.as_str() {
        "node" if status.name == name => return Ok(None),
        "node" => status
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.addr.as_str()))
            .collect(),
        _ => status
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.addr.as_str()))
            .collect(),
    };
    if let Some((known_as, addr)) = known.iter().find(|(n, a)| *n == name || *a == name) {
        return Ok(Some(Target {
            addr: addr.to_string(),
            name: match known_as == addr {
                true => String::new(),
                false => known_as.to_string(),
            },
        }));
    }
    let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
    let names = match names.is_empty() {
        true => "none".to_string(),
        false => names.join(", "),
    };
    let whose = match status.role.as_str() {
        "node" => "the members are",
        _ => "the balancer's nodes are",
    };
    Err(Failure::new(
        "NOT_FOUND",
        format!("no node called {name:?}; {whose} {names}"),
    ))
}

async fn health(global: &Global) -> Result<(), Failure> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let conn = Connection::open(global).await?;
    let answer = HealthClient::new(conn.channel.clone())
        .check(request(global, HealthCheckRequest::default()))
        .await;
    let answer = conn.check(answer).await?;
    let status = answer.status().as_str_name();
    let verdict = match answer.status() {
        tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
        _ => Err(Failure::new(
            "UNAVAILABLE",
            format!(
                "{} answers but is not serving: a node starting up, draining or paused, \
                 or a balancer with no node in rotation (`clusterlab status` says why)",
                conn.addr
            ),
        )),
    };
    // Not serving is the exit status, whether or not its reader stays.
    failure::report_then(verdict, || match global.json {
        true => print_json(&json!({"addr": conn.addr, "status": status})),
        false => println!("{} {status}", conn.addr),
    })
}

async fn policy(global: &Global, args: PolicyArgs) -> Result<(), Failure> {
    let conn = Connection::open(global).await?;
    let change = SetPolicyRequest {
        policy: args.policy,
    };
    let response = conn.admin().set_policy(request(global, change)).await;
    let response = conn.check(response).await?;
    if global.json {
        print_json(&json!({"previous": response.previous, "current": response.current}));
    } else {
        println!("{}", policy_line(&response.previous, &response.current));
    }
    Ok(())
}

/// What `fault` says a node now has. A member's name in it (`link to NAME
/// cut`) came from the cluster: shown, not obeyed, as in `status`.
fn fault_line(node: &str, active: &str) -> String {
    format!("{node}: faults now {}", proto::text::one_line(active))
}

/// What `policy` says changed, in the balancer's words, shown, not obeyed.
fn policy_line(previous: &str, current: &str) -> String {
    format!(
        "policy {} -> {}",
        proto::text::one_line(previous),
        proto::text::one_line(current)
    )
}

/// How to ask for the next page of a scan, after the key `next`: written
/// `--start-after=KEY`, which clap takes whatever the key begins with (`-b`
/// after `--start-after ` would be read as a flag), and which takes the
/// place of an earlier `--start-after` in the command it is added to.
fn next_page_hint(next: &str) -> String {
    format!(
        "(more keys may follow: add --start-after={})",
        certs::flags::shell_word(next)
    )
}

#[cfg(test)]
mod tests {
    use proto::{BackendStatus, Link};

    use super::*;

    /// At a terminal a value is shown, not obeyed: an escape sequence (a
    /// screen cleared, a window retitled, the clipboard written) and bytes
    /// that are not UTF-8 are escaped; text and its line breaks stay as
    /// they are, and are not copied.
    #[test]
    fn a_value_at_a_terminal_is_shown_escaped_where_it_would_drive_it() {
        let shown = for_a_terminal(b"\x1b]0;owned\x07\x1b[2J line\n\xff!\xc2\x9b");
        assert_eq!(
            std::str::from_utf8(&shown).unwrap(),
            r"\u{1b}]0;owned\u{7}\u{1b}[2J line".to_owned() + "\n" + r"\xff!\u{9b}"
        );
        for text in [
            &b"hello, world\nsecond line\n"[..],
            "h\u{e9}llo \u{1f600}".as_bytes(),
            b"{\n\t\"indented\": \"with a tab\"\n}",
            "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}".as_bytes(),
        ] {
            assert!(matches!(
                for_a_terminal(text),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    /// The next page's command can be pasted, a key that looks like a flag
    /// included.
    #[test]
    fn the_next_page_hint_pastes_whatever_the_key() {
        use clap::Parser;
        for key in ["-b", "--x", "-", "plain"] {
            let hint = next_page_hint(key);
            let flag = hint
                .strip_prefix("(more keys may follow: add ")
                .and_then(|rest| rest.strip_suffix(')'))
                .expect(&hint);
            // As the shell hands it over, word by word: added to the first
            // page's command, or to a later page's, which has one already.
            for earlier in [&["scan"][..], &["scan", "--start-after=a", "--limit", "2"]] {
                let words = ["clusterlab"].iter().chain(earlier).copied();
                let cli = crate::cli::Cli::try_parse_from(words.chain(flag.split(' ')));
                let Ok(crate::cli::Cli {
                    command: crate::cli::Command::Scan(args),
                    ..
                }) = cli
                else {
                    panic!("{hint} after {earlier:?}: {cli:?}");
                };
                assert_eq!(args.start_after, key, "{hint} after {earlier:?}");
            }
        }
    }

    fn node_n1() -> StatusResponse {
        let member = |name: &str, addr: &str| MemberStatus {
            name: name.into(),
            addr: addr.into(),
            state: State::Alive as i32,
            ..MemberStatus::default()
        };
        StatusResponse {
            name: "n1".into(),
            role: "node".into(),
            members: vec![member("n1", "10.0.0.1:7100"), member("n2", "10.0.0.2:7100")],
            ..StatusResponse::default()
        }
    }

    /// A value is bytes: given as an argument that is not UTF-8, it is sent
    /// as it is, as `-` and --value-file send it. clap refused it ("invalid
    /// UTF-8 was detected"), naming neither the argument nor another way.
    #[test]
    fn a_value_argument_may_be_any_bytes() {
        use std::ffi::OsString;
        let line = ["clusterlab", "put", "blob"].map(OsString::from);
        let value = OsString::from_vec(vec![0xff, 0xfe, b'!']);
        let cli = <Cli as clap::Parser>::try_parse_from(line.into_iter().chain([value])).unwrap();
        let Command::Put(put) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(read_value(&put).unwrap(), [0xff, 0xfe, b'!']);
    }

    /// Status reads on a projector's 80 columns: long reasons and counts
    /// wrap, indented under what they belong to, and nothing is lost.
    #[test]
    fn status_text_fits_80_columns() {
        let mut status = balancer();
        status.requests = 123_456_789;
        status.backends[0].health = "ejected".into();
        status.backends[0].reason = "5 requests in a row failed (last: UNAVAILABLE: injected \
            fault: n2 fails 100% of requests (`clusterlab fault n2 --clear` ends it)); held \
            out for 2s before health checks may return it"
            .into();
        let text = balancer_status_text(&status);
        assert!(text.lines().all(|l| l.len() <= render::COLUMNS), "{text}");
        assert!(text.contains("\n    ejected because: 5 requests"), "{text}");
        assert!(text.contains("\n      "), "continued, indented: {text}");
        let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words(&text).contains(&status.backends[0].reason), "{text}");

        // Compose's names and addresses, with counts of a busy hour.
        let mut status = balancer();
        for (i, b) in status.backends.iter_mut().enumerate() {
            b.name = format!("clusterlab-node-{}", i + 1);
            b.addr = format!("172.18.0.1{i}:7100");
            b.health = "healthy".into();
            (b.in_flight, b.requests, b.errors, b.ejections) = (64, 9_876_543, 12_345, 12);
        }
        let text = balancer_status_text(&status);
        assert!(text.lines().all(|l| l.len() <= render::COLUMNS), "{text}");
        assert!(
            text.contains("  clusterlab-node-2 172.18.0.11:7100 healthy        64  9876543"),
            "{text}"
        );
        let mut status = node_n1();
        for (i, m) in status.members.iter_mut().enumerate() {
            m.name = format!("clusterlab-node-{}", i + 1);
            m.addr = format!("clusterlab-node-{}:7100", i + 1);
            m.keys = 12_345;
            m.link = Some(Link {
                tls_version: "TLSv1.3".into(),
                ..Link::default()
            });
        }
        status.members[0].is_self = true;
        status.members[1].state = State::Suspect as i32;
        let text = node_status_text(&status);
        assert!(text.lines().all(|l| l.len() <= render::COLUMNS), "{text}");
        assert!(text.contains(" TLSv1.3 (last session)\n"), "{text}");

        let mut status = node_n1();
        status.unanswered = vec!["10.0.0.3:7100".into(), "10.0.0.4:7100".into()];
        status.requests = 1234;
        let text = node_status_text(&status);
        assert!(text.lines().all(|l| l.len() <= render::COLUMNS), "{text}");
        // Its share of the requests, as a balancer's status shows each node's.
        assert!(
            text.starts_with(
                "n1 (node) sees 2 members, all alive; N=0 W=0 R=0\n  1234 requests received; \
                 0 keys"
            ),
            "{text}"
        );
        assert!(
            text.contains("never answered: 10.0.0.3:7100, 10.0.0.4:7100"),
            "{text}"
        );

        // A store in trouble says so under the counts, wrapped.
        assert!(!text.contains("store:"), "{text}");
        status.store = "takes no more writes: an fsync of /data/clusterlab.redb failed \
            (Input/output error (os error 5)); check the disk (dmesg), then restart the machine, \
            not only the node"
            .into();
        let text = node_status_text(&status);
        assert!(text.lines().all(|l| l.len() <= render::COLUMNS), "{text}");
        assert!(
            text.contains("\n  store: takes no more writes: an fsync"),
            "{text}"
        );
        assert!(words(&text).contains(&status.store), "{text}");

        // A hyphenated name stays whole, wherever the line breaks.
        for fault in [
            "latency 5ms, error rate 0.25, paused, link to clusterlab-node-1 cut",
            "latency 300ms, error rate 0.5, paused, link to clusterlab-node-1 cut",
        ] {
            status.fault = fault.into();
            let text = node_status_text(&status);
            assert!(text.contains("clusterlab-node-1"), "{text}");
        }
    }

    /// `fault` and `policy` show what the server answered as `status` does:
    /// a terminal control sequence in it is shown, not obeyed.
    #[test]
    fn fault_and_policy_lines_show_the_servers_words_without_obeying_them() {
        let line = fault_line("n1", "link to n2\x1b[2J cut");
        assert!(line.starts_with("n1: faults now link to n2"), "{line}");
        assert!(!line.contains('\x1b'), "{line:?}");
        let line = policy_line("round-robin\x1b[31m", "least-outstanding\r");
        assert!(line.starts_with("policy round-robin"), "{line}");
        assert!(!line.contains(['\x1b', '\r']), "{line:?}");
    }

    /// What servers say (a member's name, as its probe answer gave it; a
    /// backend's reason) reaches the terminal without its escape sequences.
    #[test]
    fn status_text_shows_the_servers_words_without_obeying_them() {
        let mut status = node_n1();
        status.members[1].name = "n\x1b[2J".into();
        status.fault = "link to n\x1b[2J cut".into();
        let text = node_status_text(&status);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("n\\u{1b}[2J"), "{text}");
        // Each row's STATE in the heading's column, the escaped name too.
        let column = |line: &str| line.find("alive").or_else(|| line.find("STATE"));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("STATE") || l.contains(":7100"))
            .collect();
        assert!(
            rows.iter().all(|row| column(row) == column(rows[0])),
            "{text}"
        );
        // A line break in a name is shown, not a row of its own.
        let lines = text.lines().count();
        status.members[1].name = "n2\n  n9   10.0.0.9:7100   alive".into();
        let text = node_status_text(&status);
        assert_eq!(text.lines().count(), lines, "{text}");
        let mut status = balancer();
        status.backends[0].health = "ejected".into();
        status.backends[0].reason = "\x1b]0;owned\x07".into();
        let text = balancer_status_text(&status);
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    }

    fn balancer() -> StatusResponse {
        let backend = |name: &str, addr: &str| BackendStatus {
            name: name.into(),
            addr: addr.into(),
            ..BackendStatus::default()
        };
        StatusResponse {
            name: "balancer".into(),
            role: "balancer".into(),
            // A node not yet asked its name is known by its address.
            backends: vec![
                backend("n1", "10.0.0.1:7100"),
                backend("10.0.0.2:7100", "10.0.0.2:7100"),
            ],
            ..StatusResponse::default()
        }
    }

    #[test]
    fn the_link_column_says_how_each_member_is_reached() {
        let mut status = node_n1();
        status.members[0].is_self = true;
        assert_eq!(link_label(&status.members[0]), "");
        assert_eq!(link_label(&status.members[1]), "not yet");
        status.members[1].link = Some(Link::default());
        assert_eq!(link_label(&status.members[1]), "PLAINTEXT");
        status.members[1].link = Some(Link {
            tls_version: "TLSv1.3".into(),
            ..Link::default()
        });
        assert_eq!(link_label(&status.members[1]), "TLSv1.3");
        // A member that stopped answering keeps the last session it had.
        status.members[1].state = State::Dead as i32;
        assert_eq!(link_label(&status.members[1]), "TLSv1.3 (last session)");
        status.members[1].state = State::Suspect as i32;
        assert_eq!(link_label(&status.members[1]), "TLSv1.3 (last session)");
    }

    #[test]
    fn the_member_count_says_how_many_are_down() {
        let mut status = node_n1();
        assert_eq!(members_by_state(&status.members), "2 members, all alive");
        status.members[1].state = State::Dead as i32;
        assert_eq!(
            members_by_state(&status.members),
            "2 members: 1 alive, 1 dead"
        );
        status.members[0].state = State::Suspect as i32;
        assert_eq!(
            members_by_state(&status.members),
            "2 members: 1 suspect, 1 dead"
        );
        // A state this client does not know is counted too.
        status.members[0].state = 99;
        assert_eq!(
            members_by_state(&status.members),
            "2 members: 1 dead, 1 unknown"
        );
        status.members.truncate(1);
        status.members[0].state = State::Alive as i32;
        assert_eq!(members_by_state(&status.members), "1 member, all alive");
    }

    #[test]
    fn a_fault_for_the_node_reached_stays_there() {
        assert_eq!(node_address(&node_n1(), "n1").unwrap(), None);
    }

    #[test]
    fn a_fault_for_another_node_goes_to_its_address() {
        let target = |addr: &str, name: &str| {
            Some(Target {
                addr: addr.into(),
                name: name.into(),
            })
        };
        let to_n2 = node_address(&node_n1(), "n2").unwrap();
        assert_eq!(to_n2, target("10.0.0.2:7100", "n2"));
        let to_n1 = node_address(&balancer(), "n1").unwrap();
        assert_eq!(to_n1, target("10.0.0.1:7100", "n1"), "a balancer's node");
        // Named by its address, a node is asked by the name it is known by,
        // or by none while the balancer knows none: the node would refuse a
        // fault for "10.0.0.2:7100", which is not its name.
        let by_addr = node_address(&balancer(), "10.0.0.2:7100").unwrap();
        assert_eq!(by_addr, target("10.0.0.2:7100", ""));
        let n1_by_addr = node_address(&balancer(), "10.0.0.1:7100").unwrap();
        assert_eq!(n1_by_addr, target("10.0.0.1:7100", "n1"));
    }

    #[test]
    fn an_unknown_node_is_named_with_the_ones_there_are() {
        let e = node_address(&balancer(), "n9").unwrap_err();
        assert_eq!(e.code, "NOT_FOUND");
        assert_eq!(
            e.message,
            "no node called \"n9\"; the balancer's nodes are n1, 10.0.0.2:7100"
        );
        let e = node_address(&node_n1(), "n9").unwrap_err();
        assert!(e.message.ends_with("the members are n1, n2"), "{e}");
        let empty = StatusResponse {
            backends: vec![],
            ..balancer()
        };
        let e = node_address(&empty, "n1").unwrap_err();
        assert!(e.message.ends_with("the balancer's nodes are none"), "{e}");
    }
}
