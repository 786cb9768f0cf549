//! `clusterlab sniff`: what is on the wire, annotated.
//!
//! A raw packet socket (AF_PACKET: needs CAP_NET_RAW, no libpcap) receives
//! every frame on the network namespace's interfaces. The sniffer keeps TCP
//! segments to or from clusterlab's ports, follows each TCP stream, and prints
//! one line per unit the stream carries:
//!
//! - over mutual TLS, one line per TLS record: its content type and length.
//!   Everything after the handshake is `application_data`, encrypted: the keys
//!   and values are not there to read.
//! - in plaintext, one line per HTTP/2 frame: its type and stream, the gRPC
//!   method of a HEADERS frame (decoded with HPACK) and the text in a DATA
//!   frame, which includes the keys and values: every string field of the
//!   protobuf messages it carries, or, for part of a message, the runs of
//!   printable bytes.
//!
//! Each line starts with the connection's two ends. In docker compose they
//! are named after their containers (`clusterlab-node-2:7100`), by a reverse
//! lookup in Docker's DNS ([`Names`]); `--numeric` keeps the bare addresses.
//!
//! `--pcap FILE` also writes every kept frame to a capture Wireshark opens.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt::Write as _,
    hash::{Hash, Hasher},
    io::Read,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use certs::names::ContainerNames;
use socket2::Socket;

use crate::{Failure, cli::SniffArgs};

/// `ETH_P_ALL`: every protocol, in network byte order as `socket(2)` wants it.
#[cfg(target_os = "linux")]
const ETH_P_ALL: u16 = 0x0003;
/// Room for `from -> to`: the routes between the compose cluster's own
/// containers (`clusterlab-balancer-1:60296 -> clusterlab-node-1:7100`) and
/// between any two IPv4 addresses. A wider route, such as from a
/// `compose run` container, pushes its own line's units right, and only its
/// own: the columns of the lines after it stay where they were.
const ROUTE_WIDTH: usize = 54;
/// The largest frame we expect: loopback's, whose MTU is 64 KiB, with its
/// Ethernet header (65,549 bytes). A larger frame would be cut short, and
/// dropped for its missing bytes.
const FRAME_BUFFER: usize = 65_536 + 1024;
/// The receive buffer asked for: some 8 MiB of frames the capture has not
/// read yet.
const RECEIVE_BUFFER: usize = 8 << 20;

/// A raw packet socket that receives every frame, in and out, on every
/// interface of the network namespace.
#[cfg(target_os = "linux")]
fn packet_socket() -> Result<Socket, Failure> {
    Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )
    .map_err(socket_failure)
}

/// Why no packet socket could be opened, and what to do: the permission is
/// the usual reason, but not the only one (a system without packet sockets
/// refuses root too).
#[cfg(target_os = "linux")]
fn socket_failure(e: std::io::Error) -> Failure {
    /// Linux's "address family not supported".
    const EAFNOSUPPORT: i32 = 97;
    let compose = "use the compose service: docker compose run --rm --no-deps sniff";
    let unsupported =
        e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(EAFNOSUPPORT);
    let why = if unsupported {
        format!(
            "this system has no packet sockets (AF_PACKET), as in WSL 1 or some sandboxes; \
             {compose}"
        )
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "sniffing needs CAP_NET_RAW. Run it as root, by its full path since sudo resets \
             PATH (sudo \"$(command -v clusterlab)\" sniff ...), or {compose}"
        )
    } else {
        // Out of file descriptors or memory, say: the system's, for now.
        format!("the system refused it for now; try again, or {compose}")
    };
    Failure::local(format!("cannot open a raw packet socket ({e}): {why}"))
}

/// Packet sockets (AF_PACKET) are Linux's; elsewhere the compose service,
/// which runs on Linux, sniffs.
#[cfg(not(target_os = "linux"))]
fn packet_socket() -> Result<Socket, Failure> {
    // Exit 1, as on a Linux without AF_PACKET: the system's lack, not the
    // command line's.
    Err(Failure::local(
        "sniff reads frames from Linux's packet sockets (AF_PACKET), which this system does \
         not have; use the compose service: docker compose run --rm --no-deps sniff",
    ))
}

/// Sniffs until `--duration` or `--count` is reached, or `stop` is set.
pub fn run(args: SniffArgs, stop: &AtomicBool) -> Result<(), Failure> {
    let socket = packet_socket()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| Failure::local(format!("socket timeout: {e}")))?;
    // Room for a burst (a 1 MiB value is some twenty 64 KiB frames on
    // loopback): what does not fit is dropped, and shows as a gap. The
    // kernel caps it at net.core.rmem_max; less is no reason to stop.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    let mut pcap = match &args.pcap {
        Some(path) => {
            // Exit 1, as a capture file that fails later (a full disk) does.
            let file = std::fs::File::create(path).map_err(|e| {
                Failure::local(cannot_write(path, &e, Path::new(CAPTURES).is_dir()))
            })?;
            if let Err(e) = certs::files::give_to_directory_owner(path) {
                eprintln!(
                    "note: {} stays owned by this user ({e}); its directory's owner may \
                     need sudo to delete it",
                    path.display()
                );
            }
            Some(
                pcap_file::pcap::PcapWriter::with_header(
                    file,
                    pcap_file::pcap::PcapHeader {
                        // Loopback's frames are longer than the usual 65,535.
                        snaplen: FRAME_BUFFER as u32,
                        endianness: pcap_file::Endianness::native(),
                        ..Default::default()
                    },
                )
                .map_err(|e| cannot_write_capture(path, e))?,
            )
        }
        None => None,
    };
    eprintln!(
        "sniffing TCP ports {}{}; one line per TLS record or HTTP/2 frame",
        args.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        args.duration
            .map(|d| format!(" for {}", humantime::format_duration(d)))
            .unwrap_or_default()
    );
    let deadline = args.duration.map(|d| Instant::now() + d);
    let names = match args.numeric {
        true => Names::numeric(),
        false => Names::looked_up_by(NAME_PATIENCE, reverse_dns),
    };
    let mut sniffer = Sniffer::new(args.ports.clone(), names);
    let mut echoes = LoopbackEchoes::default();
    let mut frame = vec![0u8; FRAME_BUFFER];
    let (mut printed, mut saved, mut seen) = (0usize, 0usize, 0usize);
    while deadline.is_none_or(|d| Instant::now() < d)
        && args.count.is_none_or(|c| printed < c)
        && !stop.load(Ordering::Relaxed)
    {
        let len = match (&socket).read(&mut frame) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        // A signal's handler ran on this thread: Ctrl-C, which
                        // sets `stop`, is seen at the top of the loop.
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(Failure::local(format!("capture failed: {e}"))),
        };
        let Some(segment) = Segment::parse(&frame[..len]) else {
            continue;
        };
        if !sniffer.wanted(&segment) {
            continue;
        }
        seen += 1;
        if let Some(writer) = pcap.as_mut()
            && !echoes.is_echo(&frame[..len])
        {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let packet = pcap_file::pcap::PcapPacket::new(now, len as u32, &frame[..len]);
            if let Err(e) = writer.write_packet(&packet) {
                let path = args.pcap.as_deref().expect("a writer has a path");
                return Err(cannot_write_capture(path, e));
            }
            saved += 1;
        }
        // A segment may carry several frames: `--count` stops mid-segment.
        for line in within_count(sniffer.follow(&segment), printed, args.count) {
            println!("{line}");
            printed += 1;
        }
    }
    for line in within_count(sniffer.finish(), printed, args.count) {
        println!("{line}");
    }
    if let Some(path) = &args.pcap {
        eprintln!("{}", wrote(saved, path));
    }
    if seen == 0 {
        eprintln!("{}", NOTHING_SEEN);
    }
    Ok(())
}

/// On the loopback interface a raw socket sees each packet twice: as it
/// leaves and as it arrives. The text view drops the second copy as a
/// retransmission; a capture file must drop it too, or Wireshark shows every
/// segment as retransmitted. (libpcap tells the copies apart by the packet
/// type the kernel passes with each, which reading the socket does not give.)
/// Loopback frames carry all-zero MAC addresses, and the two copies are the
/// same bytes, a few frames apart as a rule, and more under load (a send made
/// as an acknowledgement arrives is read at once, and its arriving copy after
/// the frames queued before it).
#[derive(Debug, Default)]
struct LoopbackEchoes {
    /// Hashes of the loopback frames kept lately, whose echo has not come.
    recent: VecDeque<u64>,
}

impl LoopbackEchoes {
    /// How many frames back an echo is looked for: far more than a burst
    /// puts between a frame and its echo. Were it too few, each echo missed
    /// would be remembered in its turn, push out the next frame's, and every
    /// echo of the burst would go to the file. (A look through them all costs
    /// less than a microsecond, per loopback frame.)
    const REMEMBERED: usize = 1024;

    /// True for the second copy of a loopback frame just seen.
    fn is_echo(&mut self, frame: &[u8]) -> bool {
        if frame.get(..12) != Some(&[0; 12]) {
            return false;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        frame.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(at) = self.recent.iter().position(|&seen| seen == hash) {
            // Once: a third copy is a real retransmission, and kept.
            self.recent.remove(at);
            return true;
        }
        if self.recent.len() == Self::REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(hash);
        false
    }
}

/// Where the capture went. In docker compose that is a path inside the sniff
/// container: say where the host sees it.
fn wrote(saved: usize, path: &Path) -> String {
    let in_compose = Path::new(CAPTURES).is_dir();
    wrote_where(
        saved,
        path,
        std::path::absolute(path).ok().as_deref(),
        in_compose,
    )
}

/// [`wrote`], given where `path` is from the root, and whether this runs in
/// the sniff container (its `/captures` is there).
fn wrote_where(saved: usize, path: &Path, absolute: Option<&Path>, in_compose: bool) -> String {
    let packets = crate::render::counted(saved as u64, "packet", "packets");
    let mut said = format!("wrote {packets} to {}", path.display());
    let captured = absolute.is_some_and(|at| at.starts_with(CAPTURES));
    if captured {
        said += " (in docker compose: on the host, in ./captures beside docker-compose.yml, \
                  or the directory CLUSTERLAB_CAPTURES names)";
    } else if in_compose {
        // `--rm` takes the container's own files with it.
        said += "; in docker compose that is inside the sniff container, which `--rm` \
                 removes, file and all: write under /captures (--pcap /captures/lab.pcap) to \
                 find it on the host, in ./captures";
    }
    said
}

/// Why the `--pcap` file at `path` cannot be made (`e`), and, in docker
/// compose, where it can: the container's image has nothing but the
/// program, no /tmp, and a path the shell gave from the host (`~/lab.pcap`)
/// is not the container's.
fn cannot_write(path: &Path, e: &std::io::Error, in_compose: bool) -> String {
    let mut said = format!("cannot write {}: {e}", path.display());
    let on_the_host = "./captures beside docker-compose.yml on the host, or the directory \
                       CLUSTERLAB_CAPTURES names";
    let under_captures = std::path::absolute(path).is_ok_and(|at| at.starts_with(CAPTURES));
    match (in_compose, under_captures) {
        (false, _) => {}
        // A directory under it that is not there is made on the host.
        (true, true) => {
            said += &format!("; in docker compose {CAPTURES} is {on_the_host}");
            if e.kind() == std::io::ErrorKind::NotFound {
                said += ": make the directory there";
            }
        }
        (true, false) => {
            said += &format!(
                "; in docker compose, write under {CAPTURES} (--pcap {CAPTURES}/lab.pcap), \
                 which is {on_the_host}"
            )
        }
    }
    said
}

/// Where docker-compose.yml mounts the captures directory in the sniff container.
const CAPTURES: &str = "/captures";

/// Said when not one packet crossed the ports watched: most likely the
/// traffic is in another network namespace (`docker compose run client
/// sniff` watches the client container's own, where nothing else runs).
const NOTHING_SEEN: &str = "sniff: not one packet crossed those ports here. A sniffer sees \
    only its own network namespace: in docker compose, run the sniff service, which shares \
    the balancer's (docker compose run --rm --no-deps sniff); on this machine, check --ports \
    against the ports the cluster listens on";

/// The `lines` still to print when `printed` have been, of at most `count`.
fn within_count(
    lines: Vec<String>,
    printed: usize,
    count: Option<usize>,
) -> impl Iterator<Item = String> {
    let room = count.map_or(usize::MAX, |count| count.saturating_sub(printed));
    lines.into_iter().take(room)
}

/// One TCP segment, parsed out of an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub seq: u32,
    pub syn: bool,
    /// The sender has finished sending (FIN).
    pub fin: bool,
    /// The connection is reset (RST): both directions end.
    pub rst: bool,
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    /// Ethernet II / IPv4 or IPv6 / TCP, or `None` for anything else. (An
    /// IPv6 packet with extension headers before its TCP header is not
    /// followed: a cluster's traffic carries none.)
    pub fn parse(frame: &'a [u8]) -> Option<Segment<'a>> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (src_ip, dst_ip, tcp) = match ethertype {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                if *ip.get(9)? != 6 || ihl < 20 || total < ihl || ip.len() < total {
                    return None;
                }
                let at = |i: usize| IpAddr::from([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
                (at(12), at(16), ip.get(ihl..total)?)
            }
            0x86dd => {
                let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                if ip.first()? >> 4 != 6 || *ip.get(6)? != 6 {
                    return None;
                }
                let at = |i: usize| -> Option<IpAddr> {
                    let bytes: [u8; 16] = ip.get(i..i + 16)?.try_into().ok()?;
                    Some(IpAddr::from(bytes))
                };
                (at(8)?, at(24)?, ip.get(40..40 + payload)?)
            }
            _ => return None,
        };
        let offset = usize::from(tcp.get(12)? >> 4) * 4;
        if offset < 20 || tcp.len() < offset {
            return None;
        }
        Some(Segment {
            src: (src_ip, u16::from_be_bytes([tcp[0], tcp[1]])),
            dst: (dst_ip, u16::from_be_bytes([tcp[2], tcp[3]])),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            syn: tcp[13] & 0x02 != 0,
            fin: tcp[13] & 0x01 != 0,
            rst: tcp[13] & 0x04 != 0,
            payload: &tcp[offset..],
        })
    }
}

type FlowKey = ((IpAddr, u16), (IpAddr, u16));

/// Follows the TCP streams on the ports we watch.
#[derive(Debug)]
pub struct Sniffer {
    ports: Vec<u16>,
    flows: HashMap<FlowKey, Flow>,
    names: Names,
    /// Segments followed so far: when each flow was last added to.
    clock: u64,
    /// Segments a flow holds that came ahead of its next byte before it
    /// takes the bytes between for lost ([`HOLD_EARLY`]; 0 in the tests of
    /// what a gap does).
    hold_early: usize,
}

/// Segments ahead of a flow's next byte held at most, in case the segment
/// before them comes late: two segments of one connection can reach the
/// capture in either order (in compose it shares the balancer's namespace,
/// and sees frames as its veth receives them, a queue per CPU). A gap the
/// capture really missed is declared once more came after it than this,
/// or [`HOLD_EARLY_BYTES`] of them.
const HOLD_EARLY: usize = 3;
/// The bytes of early segments a flow holds at most: one loopback segment's
/// worth, so that made-up segments of hostile traffic, a flow each, cannot
/// make the flows hold more than [`MAX_FLOWS`] times this.
const HOLD_EARLY_BYTES: usize = 64 * 1024;

/// Flows followed at most. A cluster has a few dozen connections open;
/// closed ones are kept (to know their retransmissions) until there are more
/// than this, and then go first, then the longest idle (made-up segments of
/// hostile traffic). Each open one holds at most a segment and a frame or
/// record (a segment on loopback may be 64 KiB), and segments that came
/// early (up to [`HOLD_EARLY_BYTES`]); a closed one, only a plaintext
/// connection's HPACK table (up to 4 KiB, [`hpack_decoder`]), kept in case a
/// segment its FIN overtook still comes: about 5 MiB over all the flows.
const MAX_FLOWS: usize = 1024;

impl Sniffer {
    pub fn new(ports: Vec<u16>, names: Names) -> Self {
        Sniffer {
            ports,
            flows: HashMap::new(),
            names,
            clock: 0,
            hold_early: HOLD_EARLY,
        }
    }

    fn wanted(&self, segment: &Segment<'_>) -> bool {
        self.wanted_port(segment.src.1) || self.wanted_port(segment.dst.1)
    }

    fn wanted_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Adds a segment to its stream; returns a line per complete unit.
    pub fn follow(&mut self, segment: &Segment<'_>) -> Vec<String> {
        self.clock += 1;
        let lines = self.follow_payload(segment);
        let (key, reverse) = ((segment.src, segment.dst), (segment.dst, segment.src));
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.touched = self.clock;
        }
        // Nothing new comes this way after a FIN (nor either way after a
        // reset). The flow stays, to know a retransmission as one, but is
        // marked to go first once there are too many (one for each health
        // check's connection, say), and what it held of a unit that will
        // never end is let go: its buffer may have grown to a whole segment.
        // A FIN that overtook the segments before it (bytes still to come
        // before it) keeps what the flow holds, for them to complete.
        let fin_at = segment.seq.wrapping_add(segment.payload.len() as u32);
        for (ended, by) in [(key, segment.fin || segment.rst), (reverse, segment.rst)] {
            if let Some(flow) = self.flows.get_mut(&ended).filter(|_| by) {
                flow.closed = true;
                if segment.rst || !ahead_of(fin_at, flow.next_seq) {
                    flow.buffer = Vec::new();
                    flow.early = Vec::new();
                }
            }
        }
        if self.flows.len() > MAX_FLOWS {
            self.flows.retain(|_, flow| !flow.closed);
        }
        while self.flows.len() > MAX_FLOWS {
            let idlest = self
                .flows
                .iter()
                .min_by_key(|(_, flow)| flow.touched)
                .map(|(key, _)| *key);
            match idlest {
                Some(key) => self.flows.remove(&key),
                None => break,
            };
        }
        lines
    }

    /// [`Sniffer::follow`]'s reading of the payload, without the bookkeeping
    /// of which flows ended or sat idle.
    fn follow_payload(&mut self, segment: &Segment<'_>) -> Vec<String> {
        let key = (segment.src, segment.dst);
        if segment.syn {
            if self.wanted_port(segment.dst.1) {
                // Dialled: its ends may be new containers (see `Names`).
                self.names.connection(segment.src.0, segment.dst.0);
            }
            // A new connection: start this direction afresh.
            self.flows
                .insert(key, Flow::starting(segment.seq.wrapping_add(1)));
            return Vec::new();
        }
        // A FIN or a reset: no segment will come to fill a gap before those held.
        let ends = segment.fin || segment.rst;
        let holds = |flows: &HashMap<FlowKey, Flow>| {
            flows.get(&key).is_some_and(|flow| !flow.early.is_empty())
        };
        if segment.payload.is_empty() && !(ends && holds(&self.flows)) {
            return Vec::new();
        }
        let reverse_is_http2 = self
            .flows
            .get(&(segment.dst, segment.src))
            .is_some_and(|flow| matches!(flow.carries, Carries::Http2(_)));
        let flow = self
            .flows
            .entry(key)
            .or_insert_with(|| Flow::joined_late(segment.seq));
        let mut units = match segment.payload.is_empty() {
            true => Vec::new(),
            false => flow.take(segment, self.hold_early, reverse_is_http2),
        };
        if ends {
            units.extend(flow.give_up_waiting(reverse_is_http2));
        }
        self.on_route(key, units)
    }

    /// At the end of the capture: the segments flows still hold after a gap
    /// (come early, waiting for those before them), shown after the gap, as
    /// at a FIN: nothing more will come to fill it.
    pub fn finish(&mut self) -> Vec<String> {
        let mut holding: Vec<FlowKey> = (self.flows.iter())
            .filter(|(_, flow)| !flow.early.is_empty())
            .map(|(key, _)| *key)
            .collect();
        holding.sort_by_key(|key| self.flows[key].touched);
        let mut lines = Vec::new();
        for key in holding {
            let reverse_is_http2 = (self.flows.get(&(key.1, key.0)))
                .is_some_and(|flow| matches!(flow.carries, Carries::Http2(_)));
            let flow = self.flows.get_mut(&key).expect("listed above");
            let units = flow.give_up_waiting(reverse_is_http2);
            lines.extend(self.on_route(key, units));
        }
        lines
    }

    /// `units` of the flow `key`, each on a line after its route.
    fn on_route(&mut self, (src, dst): FlowKey, units: Vec<String>) -> Vec<String> {
        if units.is_empty() {
            return units;
        }
        let route = format!("{} -> {}", self.names.label(src), self.names.label(dst));
        units
            .into_iter()
            .map(|unit| format!("{route:<ROUTE_WIDTH$}  {unit}"))
            .collect()
    }
}

/// Names for the addresses on the wire: in docker compose, the containers'.
///
/// Docker's DNS server answers a reverse (PTR) lookup of a container's address
/// with `CONTAINER.NETWORK`, such as `clusterlab-node-2.clusterlab_default`:
/// the first label is the name `docker ps` shows and `docker kill` takes. (The
/// nodes' `--name auto` asks the same question about themselves.)
///
/// Lookups run on a thread of their own. The capture waits for the answer
/// about a new address, or a new connection's two ends, for at most
/// [`NAME_PATIENCE`]: Docker's DNS answers in a millisecond or so, and a
/// connection's first lines (the TLS handshake) are the ones a learner looks
/// for. A slow or absent DNS server holds the capture up no longer than that
/// for each new address or connection; a line shows the bare address until
/// its name is known, and for good if it has none. Loopback addresses are not
/// looked up: on one machine they would all be `localhost`.
///
/// Docker gives the address of a container that has gone to the next one, and
/// each `docker compose run` is a new container. So both ends of every new
/// connection are looked up again: the dialling end shows its address until
/// the answer comes, the listening end (a node, the balancer) keeps its name
/// meanwhile.
#[derive(Debug)]
pub struct Names {
    /// What the lookups found, and the condition the lookup thread signals
    /// as each answer comes.
    found: Arc<(Mutex<Found>, Condvar)>,
    /// How long to wait for an answer.
    patience: Duration,
    /// The addresses handed to the lookup thread so far.
    asked: HashSet<IpAddr>,
    /// Where to send an address to look up; `None` with `--numeric`.
    lookups: Option<mpsc::Sender<IpAddr>>,
}

/// What the lookups found, by address, and how many lookups of each address
/// are still out (a new connection asks again about an address being looked up).
#[derive(Debug, Default)]
struct Found {
    names: HashMap<IpAddr, String>,
    pending: HashMap<IpAddr, usize>,
}

/// How long the capture waits for DNS to name a new address (see [`Names`]).
pub const NAME_PATIENCE: Duration = Duration::from_millis(300);

impl Names {
    /// Bare addresses, as `tcpdump -n` prints them.
    pub fn numeric() -> Self {
        Names {
            found: Arc::default(),
            patience: Duration::ZERO,
            asked: HashSet::new(),
            lookups: None,
        }
    }

    /// Names from `lookup` (the name of the container at an address, if any), which `make`
    /// builds on the lookup thread; an answer is waited for up to `patience`.
    pub fn looked_up_by<F>(patience: Duration, make: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: FnMut(IpAddr) -> Option<String>,
    {
        let found = Arc::<(Mutex<Found>, Condvar)>::default();
        let (lookups, addresses) = mpsc::channel();
        let answers = found.clone();
        std::thread::spawn(move || {
            let mut lookup = make();
            // Ends when the sniffer, and so the sender, is gone.
            for ip in addresses {
                let name = lookup(ip);
                let (found, answered) = &*answers;
                let mut found = found.lock().expect("names poisoned");
                match name {
                    Some(name) => found.names.insert(ip, name),
                    None => found.names.remove(&ip),
                };
                if let Some(out) = found.pending.get_mut(&ip) {
                    *out -= 1;
                    if *out == 0 {
                        found.pending.remove(&ip);
                    }
                }
                answered.notify_all();
            }
        });
        Names {
            found,
            patience,
            asked: HashSet::new(),
            lookups: Some(lookups),
        }
    }

    /// `NAME:PORT` once the address has a name, else `ADDRESS:PORT`. The first
    /// sight of an address starts its lookup.
    fn label(&mut self, (ip, port): (IpAddr, u16)) -> String {
        if !self.asked.contains(&ip) {
            self.ask(ip);
            self.wait_for(&[ip]);
        }
        match self.found.0.lock().expect("names poisoned").names.get(&ip) {
            Some(name) => format!("{name}:{port}"),
            // `[::1]:7101` for an IPv6 address, as every other tool writes it.
            None => SocketAddr::new(ip, port).to_string(),
        }
    }

    /// `dialer` opened a connection to `listener`: look both up again.
    fn connection(&mut self, dialer: IpAddr, listener: IpAddr) {
        if self.lookups.is_none() {
            return;
        }
        self.found
            .0
            .lock()
            .expect("names poisoned")
            .names
            .remove(&dialer);
        self.ask(dialer);
        self.ask(listener);
        self.wait_for(&[dialer, listener]);
    }

    fn ask(&mut self, ip: IpAddr) {
        if let Some(lookups) = &self.lookups
            && !ip.is_loopback()
        {
            self.asked.insert(ip);
            let mut found = self.found.0.lock().expect("names poisoned");
            *found.pending.entry(ip).or_default() += 1;
            drop(found);
            // The thread only ends with us; were it gone, addresses stay bare.
            let _ = lookups.send(ip);
        }
    }

    /// Waits until none of `ips` is being looked up, for at most `patience`.
    fn wait_for(&self, ips: &[IpAddr]) {
        let (found, answered) = &*self.found;
        let found = found.lock().expect("names poisoned");
        let _ = answered
            .wait_timeout_while(found, self.patience, |found| {
                ips.iter().any(|ip| found.pending.contains_key(ip))
            })
            .expect("names poisoned");
    }
}

/// The container at an address, from Docker's DNS server (see
/// [`certs::names`]); the lookups wait on a runtime of their own, as the
/// sniffer's loop is not async.
fn reverse_dns() -> impl FnMut(IpAddr) -> Option<String> {
    let built = (|| -> Result<_, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let names = {
            let _inside = runtime.enter();
            ContainerNames::new()?
        };
        Ok((runtime, names))
    })();
    let built = built
        .map_err(|e| eprintln!("note: cannot look up container names ({e}); lines show addresses"))
        .ok();
    move |ip| {
        let (runtime, names) = built.as_ref()?;
        runtime.block_on(names.name_of(ip)).ok().flatten()
    }
}

/// What a stream turned out to carry.
enum Carries {
    Unknown,
    Tls,
    Http2(Box<loona_hpack::Decoder<'static>>),
}

impl std::fmt::Debug for Carries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Carries::Unknown => "Unknown",
            Carries::Tls => "Tls",
            Carries::Http2(_) => "Http2",
        })
    }
}

/// Whether sequence number `seq` is past `next` (modulo 2^32, as TCP's are).
fn ahead_of(seq: u32, next: u32) -> bool {
    seq.wrapping_sub(next) as i32 > 0
}

/// One direction of one TCP connection.
#[derive(Debug)]
struct Flow {
    next_seq: u32,
    buffer: Vec<u8>,
    carries: Carries,
    /// Capture began after the connection did: HPACK state is unknown.
    joined_late: bool,
    /// Bytes the capture missed just before the buffer (packets the socket
    /// dropped under load): the buffer may start mid-record. `Some(0)` when
    /// none were missed but the stream must still find its next record.
    missed: Option<u64>,
    /// Bytes the capture saw but had to drop while it looked for the next
    /// record: those cut off by a gap, and those it skipped over since.
    skipped: u64,
    /// HTTP/2 has no marker to find the next frame by: after a gap, the
    /// rest of a plaintext connection cannot be followed.
    lost: bool,
    /// A header block could not be decoded (or went on in a CONTINUATION,
    /// which is not followed): the HPACK table may differ from the sender's
    /// since, and a block decoded with it could show the wrong headers.
    hpack_lost: bool,
    /// A FIN or a reset has ended it.
    closed: bool,
    /// Joined mid-record: the bytes skipped to the next record were seen,
    /// not missed.
    joined_mid_record: bool,
    /// Segments that came ahead of `next_seq`, with where each begins: held
    /// until the bytes before them come, or too many have come for that.
    early: Vec<(u32, Vec<u8>)>,
    /// A record header that cannot be one was met: the bytes skipped to the
    /// next record were seen, but not understood.
    out_of_step: bool,
    /// The [`Sniffer`]'s clock when a segment last came for it.
    touched: u64,
}

impl Flow {
    fn starting(next_seq: u32) -> Self {
        Flow {
            next_seq,
            buffer: Vec::new(),
            carries: Carries::Unknown,
            joined_late: false,
            missed: None,
            skipped: 0,
            lost: false,
            hpack_lost: false,
            closed: false,
            joined_mid_record: false,
            early: Vec::new(),
            out_of_step: false,
            touched: 0,
        }
    }

    fn joined_late(seq: u32) -> Self {
        Flow {
            joined_late: true,
            ..Flow::starting(seq)
        }
    }

    /// Appends the segment's new bytes, and those of segments held for
    /// having come early that now follow on, and describes the units they
    /// complete ([`Flow::units`]). Retransmitted bytes are dropped. A segment
    /// ahead of the next byte is held (up to `hold` of them, and
    /// [`HOLD_EARLY_BYTES`]) in case the one before it comes late; past that,
    /// the bytes before the first held are taken for lost (a gap in the
    /// capture), and the stream restarts there.
    fn take(&mut self, segment: &Segment<'_>, hold: usize, reverse_is_http2: bool) -> Vec<String> {
        if ahead_of(segment.seq, self.next_seq) {
            self.early.push((segment.seq, segment.payload.to_vec()));
            let mut lines = Vec::new();
            while self.early.len() > hold || self.held_early() > HOLD_EARLY_BYTES {
                lines.extend(self.skip_to_the_first_held(reverse_is_http2));
            }
            return lines;
        }
        if !self.append(segment.seq, segment.payload) {
            return Vec::new();
        }
        self.take_what_follows_on();
        self.units(reverse_is_http2)
    }

    /// Takes every segment held, as after gaps: nothing more will come (a
    /// FIN or a reset) to fill them. Describes the units they complete.
    fn give_up_waiting(&mut self, reverse_is_http2: bool) -> Vec<String> {
        let mut lines = Vec::new();
        while !self.early.is_empty() {
            lines.extend(self.skip_to_the_first_held(reverse_is_http2));
        }
        lines
    }

    fn held_early(&self) -> usize {
        self.early.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// Takes the bytes before the first segment held for lost, restarts the
    /// stream there, with what follows on, and describes the units that
    /// completes: each gap is told, and what came whole between two gaps is
    /// shown before the second cuts the buffer off.
    fn skip_to_the_first_held(&mut self, reverse_is_http2: bool) -> Vec<String> {
        let Some(first) =
            (0..self.early.len()).min_by_key(|&i| self.early[i].0.wrapping_sub(self.next_seq))
        else {
            return Vec::new();
        };
        let (seq, bytes) = self.early.swap_remove(first);
        // What the buffer held is cut off by the gap: seen, and dropped.
        let gap = seq.wrapping_sub(self.next_seq) as u64;
        *self.missed.get_or_insert(0) += gap;
        self.skipped += self.buffer.len() as u64;
        self.buffer.clear();
        self.buffer.extend_from_slice(&bytes);
        self.next_seq = seq.wrapping_add(bytes.len() as u32);
        self.take_what_follows_on();
        self.units(reverse_is_http2)
    }

    /// Appends the segments held that now follow on from the next byte.
    fn take_what_follows_on(&mut self) {
        while let Some(i) = self
            .early
            .iter()
            .position(|(seq, _)| !ahead_of(*seq, self.next_seq))
        {
            let (seq, bytes) = self.early.swap_remove(i);
            self.append(seq, &bytes);
        }
    }

    /// Appends what is new of `bytes`, sent from `seq` (at or before the next
    /// byte); false if nothing is (a retransmission).
    fn append(&mut self, seq: u32, bytes: &[u8]) -> bool {
        let seen = self.next_seq.wrapping_sub(seq) as usize;
        if seen >= bytes.len() {
            return false;
        }
        self.buffer.extend_from_slice(&bytes[seen..]);
        self.next_seq = seq.wrapping_add(bytes.len() as u32);
        true
    }

    /// Removes and describes every complete unit in the buffer.
    /// `reverse_is_http2`: the other direction of the connection is plaintext
    /// HTTP/2.
    fn units(&mut self, reverse_is_http2: bool) -> Vec<String> {
        let mut lines = Vec::new();
        // Joined mid-connection, the first byte may be anywhere in a record
        // or a frame: judged by it, an encrypted connection would be taken
        // for HTTP/2 about as often as not, and its ciphertext shown as
        // plaintext frames. So it must begin a whole record, the preface or
        // a frame header; else it is TLS met mid-record, and resumes at the
        // next record, unless the other direction is plaintext HTTP/2.
        if self.joined_late && matches!(self.carries, Carries::Unknown) && self.missed.is_none() {
            let tls = next_tls_record(&self.buffer) == Some(0);
            let prefix = &self.buffer[..self.buffer.len().min(H2_PREFACE.len())];
            let preface = H2_PREFACE.starts_with(prefix);
            if !tls && (self.buffer.len() < 9 || (preface && prefix.len() < H2_PREFACE.len())) {
                return lines;
            }
            let h2 = preface || is_h2_frame_header(&self.buffer, FrameTypes::Defined);
            if !tls && !h2 && reverse_is_http2 {
                self.carries = Carries::Http2(Box::new(hpack_decoder()));
                self.lost = true;
                self.buffer.clear();
                lines.push(
                    "(the capture joined this plaintext connection mid-frame: this direction \
                     cannot be followed)"
                        .to_string(),
                );
                return lines;
            }
            self.carries = match (tls, h2) {
                (true, _) => Carries::Tls,
                (false, true) => Carries::Http2(Box::new(hpack_decoder())),
                (false, false) => {
                    self.joined_mid_record = true;
                    self.missed = Some(0);
                    Carries::Tls
                }
            };
        }
        // A direction taken for TLS met mid-record, for want of better, and
        // no record found yet, whose other direction has since shown
        // plaintext HTTP/2: one connection is not both. (Once a record is
        // found, it is TLS: the other direction's guess is the weaker one.)
        if self.joined_mid_record && matches!(self.carries, Carries::Tls) && reverse_is_http2 {
            self.carries = Carries::Http2(Box::new(hpack_decoder()));
            self.missed = None;
            self.skipped = 0;
            self.joined_mid_record = false;
            self.lost = true;
            self.buffer.clear();
            lines.push(
                "(the capture joined this plaintext connection mid-frame: this direction \
                 cannot be followed)"
                    .to_string(),
            );
            return lines;
        }
        // Once more from here after a record header that cannot be one:
        // the stream is out of step, and resumes at the next record.
        'resync: loop {
            if let Some(missed) = self.missed {
                match self.carries {
                    // Ciphertext read as a record header would make up records:
                    // resume at the next thing that looks like one.
                    Carries::Tls | Carries::Unknown => match next_tls_record(&self.buffer) {
                        Some(at) => {
                            self.buffer.drain(..at);
                            self.missed = None;
                            let seen = std::mem::take(&mut self.skipped) + at as u64;
                            let bytes = |n| crate::render::counted(n, "byte", "bytes");
                            let joined = std::mem::take(&mut self.joined_mid_record);
                            let out_of_step = std::mem::take(&mut self.out_of_step);
                            lines.push(match (joined, out_of_step, seen) {
                                (true, ..) => format!(
                                    "(the capture joined this connection mid-record: skipped \
                                     {} to the next TLS record)",
                                    bytes(missed + seen)
                                ),
                                (false, true, _) => format!(
                                    "(out of step with this connection's TLS records, which an \
                                     earlier gap can leave: skipped {} to the next one)",
                                    bytes(missed + seen)
                                ),
                                (false, false, 0) => format!(
                                    "(the capture missed {} here, and resumes at the next TLS \
                                     record)",
                                    bytes(missed)
                                ),
                                (false, false, seen) => format!(
                                    "(the capture missed {} here, and skipped {} more to the \
                                     next TLS record)",
                                    bytes(missed),
                                    bytes(seen)
                                ),
                            });
                        }
                        // Not yet: keep the last few bytes, which may begin one.
                        None => {
                            let keep = self.buffer.len().min(4);
                            self.skipped += (self.buffer.len() - keep) as u64;
                            self.buffer.drain(..self.buffer.len() - keep);
                            return lines;
                        }
                    },
                    Carries::Http2(_) => {
                        self.buffer.clear();
                        self.missed = None;
                        self.skipped = 0;
                        if !self.lost {
                            self.lost = true;
                            lines.push(format!(
                                "(the capture missed {}; the rest of this plaintext connection \
                                 cannot be followed)",
                                crate::render::counted(missed, "byte", "bytes")
                            ));
                        }
                        return lines;
                    }
                }
            }
            if self.lost {
                self.buffer.clear();
                return lines;
            }
            if matches!(self.carries, Carries::Unknown) {
                let Some(&first) = self.buffer.first() else {
                    return Vec::new();
                };
                self.carries = if (20..=23).contains(&first) {
                    Carries::Tls
                } else {
                    Carries::Http2(Box::new(hpack_decoder()))
                };
            }
            loop {
                let used = match &mut self.carries {
                    Carries::Tls => match tls_record(&self.buffer) {
                        TlsRecord::Whole(used, line) => {
                            lines.push(line);
                            Some(used)
                        }
                        TlsRecord::Partial => None,
                        TlsRecord::NotOne => {
                            // Counted with what the resync skips.
                            self.missed = Some(0);
                            self.out_of_step = true;
                            continue 'resync;
                        }
                    },
                    Carries::Http2(decoder) => {
                        let prefix = &self.buffer[..self.buffer.len().min(H2_PREFACE.len())];
                        if self.buffer.starts_with(H2_PREFACE) {
                            lines.push("HTTP/2 connection preface (plaintext)".to_string());
                            Some(H2_PREFACE.len())
                        } else if H2_PREFACE.starts_with(prefix) {
                            // Perhaps the preface, in part so far.
                            None
                        } else if self.buffer.len() >= 9
                            && !is_h2_frame_header(&self.buffer, FrameTypes::Any)
                        {
                            // Not a frame HTTP/2 allows: nothing after it can be
                            // told apart, and waiting for its length (up to
                            // 16 MiB) would only hold that much.
                            self.lost = true;
                            self.buffer.clear();
                            lines.push(
                                "(not a frame HTTP/2 allows: the rest of this connection cannot \
                                 be followed)"
                                    .to_string(),
                            );
                            None
                        } else {
                            let hpack = Hpack {
                                decoder,
                                joined_late: self.joined_late,
                                lost: &mut self.hpack_lost,
                            };
                            h2_frame(&self.buffer, hpack).map(|(used, line)| {
                                lines.push(line);
                                used
                            })
                        }
                    }
                    Carries::Unknown => None,
                };
                match used {
                    Some(used) => {
                        self.buffer.drain(..used);
                    }
                    None => return lines,
                }
            }
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest HTTP/2 frame payload a peer may send unless told otherwise
/// (SETTINGS_MAX_FRAME_SIZE's initial value; nothing in clusterlab raises it).
const MAX_H2_FRAME: usize = 1 << 14;

/// An HPACK decoder whose table a peer cannot grow past HTTP/2's default
/// 4 KiB (SETTINGS_HEADER_TABLE_SIZE; nothing in clusterlab raises it).
fn hpack_decoder() -> loona_hpack::Decoder<'static> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(4096);
    decoder
}

/// Which frame types [`is_h2_frame_header`] takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameTypes {
    /// Those HTTP/2 defines (0 to 9): to tell a connection met mid-way
    /// from ciphertext.
    Defined,
    /// Any: within a connection known to be HTTP/2, a frame of a type an
    /// extension defines (PRIORITY_UPDATE, 0x10) is to be passed over, not
    /// taken for a loss of step (RFC 9113, section 5.5).
    Any,
}

/// Whether `buffer` begins with what can be an HTTP/2 frame header: a
/// length HTTP/2 allows, a frame type of `types`, the reserved bit clear.
/// Ciphertext passes about once in fifty thousand with defined types.
fn is_h2_frame_header(buffer: &[u8], types: FrameTypes) -> bool {
    let Some(header) = buffer.get(..9) else {
        return false;
    };
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    let typed = types == FrameTypes::Any || header[3] <= 0x9;
    len <= MAX_H2_FRAME && typed && header[5] & 0x80 == 0
}

/// Where the first complete TLS record header in `buffer` begins
/// ([`is_tls_record_header`]).
fn next_tls_record(buffer: &[u8]) -> Option<usize> {
    buffer.windows(5).position(is_tls_record_header)
}

/// Whether `header` (five bytes) can be a TLS record's: a content type (20
/// to 23), version 3.1 to 3.4, and a length TLS allows. Random ciphertext
/// looks like one at a given byte about once in four million.
fn is_tls_record_header(header: &[u8]) -> bool {
    let len = u16::from_be_bytes([header[3], header[4]]);
    (20..=23).contains(&header[0])
        && header[1] == 3
        && (1..=4).contains(&header[2])
        && len <= MAX_TLS_RECORD
}

/// The longest TLS record body: 2^14 bytes of plaintext, plus what
/// encryption may add.
const MAX_TLS_RECORD: u16 = (1 << 14) + 256;

/// What the start of a TLS stream holds.
#[derive(Debug, PartialEq)]
enum TlsRecord {
    /// A whole record: the bytes it takes, and its description.
    Whole(usize, String),
    /// The start of one, so far.
    Partial,
    /// A header no record has: the stream is out of step (an earlier
    /// resync took ciphertext for a header), and what it says of a length
    /// must not be waited for.
    NotOne,
}

/// The TLS record at the start of `buffer`.
fn tls_record(buffer: &[u8]) -> TlsRecord {
    let Some(header) = buffer.get(..5) else {
        return TlsRecord::Partial;
    };
    if !is_tls_record_header(header) {
        return TlsRecord::NotOne;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if buffer.len() < 5 + len {
        return TlsRecord::Partial;
    }
    let line = match header[0] {
        // TLS 1.3 sends one, a byte that carries nothing, only to look like
        // TLS 1.2 to middleboxes (RFC 8446 D.4): not where encryption begins.
        20 => format!(
            "TLS change_cipher_spec  {len:>5} bytes  plaintext, carries nothing (a TLS 1.2 \
             look-alike for middleboxes)"
        ),
        // TLS 1.3 (the only version clusterlab speaks) sends every encrypted
        // record as application_data: an alert record is a plaintext one,
        // sent before the keys were agreed (a ClientHello refused).
        21 => format!(
            "TLS alert               {len:>5} bytes  plaintext: {}",
            alert(&buffer[5..5 + len])
        ),
        22 => format!(
            "TLS handshake           {len:>5} bytes  (hello: readable, certificates follow encrypted in TLS 1.3)"
        ),
        _ => format!("TLS application_data    {len:>5} bytes  encrypted"),
    };
    TlsRecord::Whole(5 + len, line)
}

/// A plaintext alert's level and description, as RFC 8446 names them.
fn alert(body: &[u8]) -> String {
    let [level, description] = body else {
        return "not a two-byte alert".into();
    };
    let level = match level {
        1 => "warning",
        2 => "fatal",
        _ => "level?",
    };
    let description = match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        other => return format!("{level} alert {other}"),
    };
    format!("{level} {description}")
}

/// A connection's HPACK decoder, and what is known of its state.
struct Hpack<'a> {
    decoder: &'a mut loona_hpack::Decoder<'static>,
    /// The capture began after the connection did.
    joined_late: bool,
    /// Set once a block could not be decoded ([`Flow::hpack_lost`]).
    lost: &'a mut bool,
}

/// One HTTP/2 frame: (bytes used, description), or `None` until it is complete.
fn h2_frame(buffer: &[u8], hpack: Hpack<'_>) -> Option<(usize, String)> {
    let header = buffer.get(..9)?;
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    if buffer.len() < 9 + len {
        return None;
    }
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let flags = header[4];
    let payload = &buffer[9..9 + len];
    let mut line = String::new();
    match header[3] {
        0x0 => {
            line = on_stream("DATA", stream, Some(len));
            let readable = readable(payload);
            if !readable.is_empty() {
                let _ = write!(line, "  readable: {readable}");
            }
        }
        0x1 => {
            line = on_stream("HEADERS", stream, Some(len));
            let block = headers_block(payload, flags);
            if flags & 0x4 == 0 {
                // The block goes on in CONTINUATION frames, which are not
                // followed: decoded alone it may end mid-field, and what
                // they add to the table is missed.
                *hpack.lost = true;
                line.push_str(
                    "  (continued in CONTINUATION frames, not followed: headers not shown)",
                );
            } else if *hpack.lost {
                line.push_str("  (HPACK state unknown since an earlier block: headers not shown)");
            } else {
                match hpack.decoder.decode(block) {
                    Ok(headers) => {
                        for (name, value) in headers {
                            if name == b":path" || name == b"grpc-status" {
                                // Escaped: a peer's header must not drive the
                                // learner's terminal (an ESC sequence in a path).
                                let _ = write!(
                                    line,
                                    "  {} {}",
                                    String::from_utf8_lossy(&name),
                                    proto::text::one_line(&String::from_utf8_lossy(&value))
                                );
                            }
                        }
                    }
                    // What it added to the table before the error stays, what
                    // came after does not: the table is not the sender's now.
                    Err(_) if hpack.joined_late => {
                        *hpack.lost = true;
                        line.push_str("  (capture joined mid-connection: HPACK state unknown)")
                    }
                    Err(e) => {
                        *hpack.lost = true;
                        let _ = write!(line, "  (cannot decode headers: {e:?})");
                    }
                }
            }
        }
        0x3 => {
            line = on_stream("RST_STREAM", stream, None);
        }
        0x4 => {
            let ack = if flags & 0x1 != 0 { " ack" } else { "" };
            let _ = write!(line, "H2 SETTINGS{ack}");
        }
        0x2 => {
            line = on_stream("PRIORITY", stream, None);
        }
        0x5 => {
            // Its header block adds to the sender's table, and is not decoded.
            *hpack.lost = true;
            line = on_stream("PUSH_PROMISE", stream, None);
        }
        0x6 => {
            // Who answers whom: a PING's ACK comes back the other way.
            let ack = if flags & 0x1 != 0 { " ack" } else { "" };
            let _ = write!(line, "H2 PING{ack}");
        }
        0x7 => line.push_str("H2 GOAWAY"),
        0x8 => {
            line = on_stream("WINDOW_UPDATE", stream, None);
        }
        0x9 => {
            line = on_stream("CONTINUATION", stream, Some(len));
        }
        other => {
            let _ = write!(line, "H2 frame type {other} stream {stream} {len} bytes");
        }
    }
    Some((9 + len, line))
}

/// A frame on a stream, its name padded so that "stream" and the byte
/// counts after it line up from one frame type to the next.
fn on_stream(name: &str, stream: u32, bytes: Option<usize>) -> String {
    match bytes {
        Some(len) => format!("H2 {name:<13} stream {stream:<4} {len:>5} bytes"),
        None => format!("H2 {name:<13} stream {stream}"),
    }
}

/// A HEADERS payload without its padding and priority fields.
fn headers_block(payload: &[u8], flags: u8) -> &[u8] {
    let mut block = payload;
    let mut padding = 0;
    if flags & 0x08 != 0 {
        padding = usize::from(*block.first().unwrap_or(&0));
        block = block.get(1..).unwrap_or_default();
    }
    if flags & 0x20 != 0 {
        block = block.get(5..).unwrap_or_default();
    }
    &block[..block.len().saturating_sub(padding)]
}

/// What a person could read in a DATA frame's payload, quoted. Whole gRPC
/// messages are read as protobuf, without the schema: every field that is
/// text, in nested messages too, so `"secret" "hunter2"` shows as two strings
/// and not as one run with the next field's tag in it. Anything else, such as
/// part of a large message, as runs of printable bytes.
pub fn readable(payload: &[u8]) -> String {
    grpc_text(payload).unwrap_or_else(|| readable_runs(payload))
}

/// The text fields of the gRPC messages that make up `payload`, quoted; `None`
/// unless it is whole, uncompressed messages (1 byte flag, 4 bytes length,
/// protobuf) of well-formed protobuf.
fn grpc_text(mut payload: &[u8]) -> Option<String> {
    let mut texts = Vec::new();
    while let Some((&compressed, rest)) = payload.split_first() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let message = rest.get(4..)?.get(..len)?;
        if compressed != 0 {
            return None;
        }
        texts.extend(protobuf_text(message, 0)?);
        payload = &rest[4 + len..];
    }
    Some(texts.join(" "))
}

/// The text fields of one protobuf message, in order; `None` if the bytes are
/// not a well-formed message. A length-delimited field is a nested message if
/// it reads as one with text in it, else text if it is UTF-8 without control
/// characters (but whitespace), else bytes, of which the printable runs are
/// shown. (Short text can read as a message of numbers, "hi" for one: that is
/// why a nested message must have text in it.)
fn protobuf_text(mut bytes: &[u8], depth: usize) -> Option<Vec<String>> {
    /// Deeper than any clusterlab message nests.
    const MAX_DEPTH: usize = 8;
    let mut texts = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        if key >> 3 == 0 {
            return None; // field 0 does not exist
        }
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let field = bytes.get(..len)?;
                bytes = &bytes[len..];
                // A nested message first: its bytes can be valid text too (a
                // tag of 0x0a is a line break, 0x22 a quote).
                let nested = (depth < MAX_DEPTH)
                    .then(|| protobuf_text(field, depth + 1))
                    .flatten()
                    .filter(|nested| !nested.is_empty());
                match (nested, std::str::from_utf8(field)) {
                    (Some(nested), _) => texts.extend(nested),
                    (None, Ok(text))
                        if !text.is_empty()
                            && text.chars().all(|c| !c.is_control() || c.is_whitespace()) =>
                    {
                        texts.push(quoted(text));
                    }
                    (None, _) => {
                        texts.extend(Some(readable_runs(field)).filter(|runs| !runs.is_empty()))
                    }
                }
            }
            _ => return None, // groups (3, 4) are not used; 6 and 7 do not exist
        }
    }
    Some(texts)
}

/// `text` in quotes, shown as the client shows a key ([`proto::text::one_line`]:
/// no character in it can hide or drive the terminal), a quote in it escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", proto::text::one_line(text).replace('"', "\\\""))
}

/// Reads a protobuf varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Runs of 3 or more printable ASCII characters, quoted: what a person could
/// read in the bytes.
pub fn readable_runs(bytes: &[u8]) -> String {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' '))
        .filter(|run| run.len() >= 3)
        .map(|run| format!("{:?}", String::from_utf8_lossy(run)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A capture file that takes no more (a full disk, `--pcap /dev/full`),
/// named, with the system's reason rather than the pcap library's wording
/// ("Error reading bytes", for a write).
fn cannot_write_capture(path: &std::path::Path, e: pcap_file::PcapError) -> Failure {
    let why = match e {
        pcap_file::PcapError::IoError(io) => io.to_string(),
        other => other.to_string(),
    };
    Failure::local(format!(
        "cannot write the capture to {}: {why}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture file that takes no more is named, with the system's reason.
    #[test]
    fn a_capture_that_cannot_be_written_is_named_with_the_reason() {
        let full = pcap_file::PcapError::IoError(std::io::Error::from_raw_os_error(28));
        let failure = cannot_write_capture(std::path::Path::new("/dev/full"), full).to_string();
        assert!(
            failure.contains("cannot write the capture to /dev/full: No space left on device"),
            "{failure}"
        );
    }

    /// `--count 5` prints five lines, though the segment that reaches the
    /// count carries more frames than that.
    #[test]
    fn the_count_stops_inside_a_segment() {
        let lines = || vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(within_count(lines(), 3, Some(5)).count(), 2);
        assert_eq!(within_count(lines(), 5, Some(5)).count(), 0);
        assert_eq!(within_count(lines(), 9, None).count(), 3);
    }

    /// An HTTP/2 PING frame.
    const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    /// [`PING`], as the server at 10.0.0.2:7000 answers the client at
    /// 10.0.0.1:40000 that [`frame`] sends from.
    fn ping_from_the_server() -> Segment<'static> {
        Segment {
            src: (IpAddr::from([10, 0, 0, 2]), 7000),
            dst: (IpAddr::from([10, 0, 0, 1]), 40000),
            seq: 9,
            syn: false,
            fin: false,
            rst: false,
            payload: &PING,
        }
    }

    /// An Ethernet/IPv4/TCP frame carrying `payload` from 10.0.0.1:40000 to
    /// 10.0.0.2:7000.
    fn frame(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        frame_from([10, 0, 0, 1], seq, syn, payload)
    }

    /// A TLS application_data record carrying `body` (at most 255 bytes).
    fn application_data(body: &[u8]) -> Vec<u8> {
        let mut record = vec![23, 3, 3, 0, body.len() as u8];
        record.extend_from_slice(body);
        record
    }

    /// [`frame`], from `source` (port 40000).
    fn frame_from(source: [u8; 4], seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&source);
        f.extend_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&7000u16.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[
            0,
            0,
            0,
            0,
            0x50,
            if syn { 0x02 } else { 0x18 },
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(payload);
        f
    }

    /// A closed flow is kept, to know its retransmissions, but not what its
    /// buffer held: 1,024 of them, each after a 64 KiB segment, held 64 MiB.
    #[test]
    fn a_closed_flow_keeps_no_buffer() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let syn = frame(99, true, &[]);
        sniffer.follow(&Segment::parse(&syn).unwrap());
        // A whole record, and the start of one that never ends.
        let mut records = vec![23, 3, 3, 0, 6];
        records.extend_from_slice(b"secret");
        records.extend_from_slice(&[23, 3, 3, 0x40, 0]);
        records.resize(10_016, 0);
        let big = frame(100, false, &records);
        let lines = sniffer.follow(&Segment::parse(&big).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        let key = (
            (IpAddr::from([10, 0, 0, 1]), 40000),
            (IpAddr::from([10, 0, 0, 2]), 7000),
        );
        assert!(sniffer.flows[&key].buffer.capacity() >= 10_000);
        let mut fin = frame(100 + 10_016, false, &[]);
        fin[47] |= 0x01;
        sniffer.follow(&Segment::parse(&fin).unwrap());
        let flow = &sniffer.flows[&key];
        assert!(flow.closed);
        assert_eq!(flow.buffer.capacity(), 0);
    }

    /// [`frame`], carried over IPv6 from `[::1]:40000` to `[::2]:7000`.
    fn frame6(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let tcp = frame(seq, syn, payload).split_off(14 + 20);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        f.extend_from_slice(&"::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend(tcp);
        f
    }

    /// A cluster reached over IPv6 (`--listen [::1]:7101`, or a name that
    /// resolves to `::1` first) is followed too: its frames were dropped
    /// unseen, and the run ended saying no packet had crossed the ports.
    #[test]
    fn tcp_over_ipv6_is_followed() {
        let syn = frame6(99, true, &[]);
        let segment = Segment::parse(&syn).expect("an IPv6 segment");
        assert_eq!(segment.src, ("::1".parse().unwrap(), 40000));
        assert_eq!(segment.dst, ("::2".parse().unwrap(), 7000));
        assert!(segment.syn && segment.payload.is_empty());
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        sniffer.follow(&segment);
        let record = [23, 3, 3, 0, 1, 0xaa];
        let lines = sniffer.follow(&Segment::parse(&frame6(100, false, &record)).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("[::1]:40000") && lines[0].contains("[::2]:7000"),
            "{lines:?}"
        );
        assert!(lines[0].contains("application_data"), "{lines:?}");
        // Another next header than TCP (here UDP) is not a segment.
        let mut udp = frame6(101, false, &[]);
        udp[14 + 6] = 17;
        assert!(Segment::parse(&udp).is_none());
    }

    #[test]
    fn tls_records_are_shown_as_encrypted_even_across_segments() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let syn = frame(99, true, &[]);
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let mut record = vec![23, 3, 3, 0, 6];
        record.extend_from_slice(b"secret");
        let first = frame(100, false, &record[..7]);
        let second = frame(107, false, &record[7..]);
        assert!(sniffer.follow(&Segment::parse(&first).unwrap()).is_empty());
        let lines = sniffer.follow(&Segment::parse(&second).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("application_data"), "{lines:?}");
        assert!(lines[0].contains("encrypted"), "{lines:?}");
        assert!(!lines[0].contains("secret"), "{lines:?}");
        // A retransmission adds nothing.
        assert!(sniffer.follow(&Segment::parse(&second).unwrap()).is_empty());
    }

    /// Joined mid-connection (no SYN seen), an encrypted connection's first
    /// byte is most likely in the middle of a record: it was taken for
    /// HTTP/2, and its ciphertext then shown as frames, "readable" bytes and
    /// all, on a cluster that encrypts everything.
    #[test]
    fn a_connection_joined_mid_record_is_tls_resumed_at_the_next_record() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let mut bytes = vec![0x9c; 30];
        bytes.extend([23, 3, 3, 0, 1, 0xaa]);
        let lines = sniffer.follow(&Segment::parse(&frame(500, false, &bytes)).unwrap());
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("TLS application_data        1 bytes  encrypted")),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains("H2")), "{lines:?}");
        assert!(
            lines[0].ends_with(
                "joined this connection mid-record: skipped 30 bytes to the next TLS record)"
            ),
            "{lines:?}"
        );
        // One joined at a frame's start is still followed as HTTP/2.
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let lines = sniffer.follow(&Segment::parse(&frame(500, false, &PING)).unwrap());
        assert!(
            lines.last().is_some_and(|l| l.ends_with("H2 PING")),
            "{lines:?}"
        );
    }

    /// A frame longer than HTTP/2 allows is not waited for (up to 16 MiB,
    /// held), and a connection's flows are marked closed once it ends (to
    /// go first when there are too many).
    #[test]
    fn a_frame_too_long_is_not_held_and_ended_connections_are_marked_closed() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let syn = frame(99, true, &[]);
        sniffer.follow(&Segment::parse(&syn).unwrap());
        let mut seq = 100;
        let mut said = Vec::new();
        for i in 0..20 {
            let payload = match i {
                0 => vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1],
                _ => vec![0x41; 1400],
            };
            said.extend(sniffer.follow(&Segment::parse(&frame(seq, false, &payload)).unwrap()));
            seq += payload.len() as u32;
            let held: usize = sniffer.flows.values().map(|f| f.buffer.len()).sum();
            assert!(held <= 9 + MAX_H2_FRAME, "{held} bytes held");
        }
        assert!(
            said.iter().any(|l| l.contains("not a frame HTTP/2 allows")),
            "{said:?}"
        );
        let mut fin = frame(seq, false, &[]);
        fin[14 + 20 + 13] = 0x11; // FIN, ACK
        sniffer.follow(&Segment::parse(&fin).unwrap());
        assert!(sniffer.flows.values().all(|f| f.closed));
    }

    /// Segments of many made-up connections (hostile traffic, or hours of
    /// health checks) keep at most `MAX_FLOWS` flows, closed ones going
    /// first; a closed one still knows a retransmission as one.
    #[test]
    fn flows_are_bounded_and_a_closed_one_knows_its_retransmissions() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let record = [23, 3, 3, 0, 1, 0];
        let mut with_fin = frame(100, false, &record);
        with_fin[14 + 20 + 13] = 0x19; // FIN, PSH, ACK
        let first = sniffer.follow(&Segment::parse(&with_fin).unwrap());
        assert_eq!(first.len(), 1, "{first:?}");
        let again = sniffer.follow(&Segment::parse(&with_fin).unwrap());
        assert!(again.is_empty(), "retransmitted: {again:?}");

        for i in 0..(MAX_FLOWS + 50) {
            let source = [10, 1, (i >> 8) as u8, i as u8];
            sniffer.follow(&Segment::parse(&frame_from(source, 7, false, &record)).unwrap());
            assert!(sniffer.flows.len() <= MAX_FLOWS);
        }
        let closed = (
            (IpAddr::from([10, 0, 0, 1]), 40000),
            (IpAddr::from([10, 0, 0, 2]), 7000),
        );
        assert!(
            !sniffer.flows.contains_key(&closed),
            "the closed flow went first"
        );
    }

    /// Joined mid-connection at the preface, a plaintext connection is
    /// followed; joined mid-frame, with its other direction known plaintext,
    /// it says it cannot be, rather than look for TLS records in it.
    #[test]
    fn a_plaintext_connection_joined_late_is_followed_or_said_to_be_lost() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let lines = sniffer.follow(&Segment::parse(&frame(500, false, &H2_PREFACE[..10])).unwrap());
        assert!(lines.is_empty(), "{lines:?}");
        let lines = sniffer.follow(&Segment::parse(&frame(510, false, &H2_PREFACE[10..])).unwrap());
        assert!(
            lines.last().is_some_and(|l| l.contains("preface")),
            "{lines:?}"
        );

        // The other direction: mid-frame.
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        // The other direction speaks plaintext HTTP/2.
        assert!(
            sniffer
                .follow(&ping_from_the_server())
                .last()
                .is_some_and(|l| l.ends_with("H2 PING"))
        );
        let mut bytes = vec![0x41; 30];
        bytes.extend(PING);
        let lines = sniffer.follow(&Segment::parse(&frame(500, false, &bytes)).unwrap());
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("joined this plaintext connection mid-frame")),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains("TLS")), "{lines:?}");
    }

    /// After a block that could not be decoded, the HPACK table may differ
    /// from the sender's: later blocks are not decoded with it (they could
    /// show another request's path).
    #[test]
    fn after_a_block_that_does_not_decode_headers_are_not_shown() {
        let (mut decoder, mut lost) = (hpack_decoder(), false);
        let mut header = |block: &[u8]| {
            let mut bytes = vec![0, 0, block.len() as u8, 0x1, 0x4, 0, 0, 0, 1];
            bytes.extend_from_slice(block);
            let hpack = Hpack {
                decoder: &mut decoder,
                joined_late: true,
                lost: &mut lost,
            };
            h2_frame(&bytes, hpack).unwrap().1
        };
        // Adds `:path /X`, then an index past the table: an error.
        let first = header(&[0x44, 2, b'/', b'X', 0xc5]);
        assert!(first.contains("HPACK state unknown"), "{first}");
        // Index 62, which the sender may mean as something else now.
        let later = header(&[0xbe]);
        assert!(!later.contains("/X"), "{later}");
        assert!(
            later.contains("HPACK state unknown since an earlier block"),
            "{later}"
        );
    }

    /// A block that goes on in CONTINUATION frames is not decoded in part
    /// (its fragment can end mid-field, which read as "cannot decode"), and
    /// a PUSH_PROMISE's block is not decoded at all: after either, the
    /// table may not be the sender's.
    #[test]
    fn after_a_continued_block_or_a_push_promise_headers_are_not_shown() {
        for (kind, flags) in [(0x1, 0x0), (0x5, 0x4)] {
            let (mut decoder, mut lost) = (hpack_decoder(), false);
            let mut frame = |kind: u8, flags: u8, block: &[u8]| {
                let mut bytes = vec![0, 0, block.len() as u8, kind, flags, 0, 0, 0, 1];
                bytes.extend_from_slice(block);
                let hpack = Hpack {
                    decoder: &mut decoder,
                    joined_late: false,
                    lost: &mut lost,
                };
                h2_frame(&bytes, hpack).unwrap().1
            };
            // Adds `:path /X` and breaks off in the next field's name.
            let first = frame(kind, flags, &[0x44, 2, b'/', b'X', 0x40, 5, b'a']);
            assert!(!first.contains("cannot decode"), "{first}");
            if kind == 0x1 {
                assert!(
                    first.contains("continued in CONTINUATION frames"),
                    "{first}"
                );
            }
            let later = frame(0x1, 0x4, &[0x82]);
            assert!(later.contains("HPACK state unknown"), "{later}");
        }
    }

    /// A PING and its ACK read apart, as SETTINGS and its ACK do; and the
    /// frame types clusterlab's peers do not send are named all the same.
    #[test]
    fn a_ping_ack_and_every_frame_type_are_named() {
        let (mut decoder, mut lost) = (hpack_decoder(), false);
        let mut frame = |kind: u8, flags: u8, len: u8| {
            let mut bytes = vec![0, 0, len, kind, flags, 0, 0, 0, 3];
            bytes.resize(9 + usize::from(len), 0);
            let hpack = Hpack {
                decoder: &mut decoder,
                joined_late: false,
                lost: &mut lost,
            };
            h2_frame(&bytes, hpack).unwrap().1
        };
        assert!(frame(0x6, 0, 8).ends_with("H2 PING"));
        assert!(frame(0x6, 0x1, 8).ends_with("H2 PING ack"));
        assert!(frame(0x2, 0, 5).ends_with("H2 PRIORITY      stream 3"));
        assert!(frame(0x5, 0x4, 4).ends_with("H2 PUSH_PROMISE  stream 3"));
        // Its byte count in the column of the HEADERS frame it goes on.
        let continuation = frame(0x9, 0x4, 2);
        assert!(
            continuation.ends_with("H2 CONTINUATION  stream 3        2 bytes"),
            "{continuation}"
        );
        // "stream" in one column, whichever frame is on it.
        let lines: Vec<String> = [0x0, 0x1, 0x2, 0x3, 0x5, 0x8, 0x9]
            .into_iter()
            .map(|kind| frame(kind, 0x4, 4))
            .collect();
        let column = |line: &String| line.find(" stream ");
        assert!(
            lines.iter().all(|line| column(line) == column(&lines[0])),
            "{lines:#?}"
        );
    }

    /// TLS 1.3 encrypts every record as application_data: an alert record
    /// is plaintext, and says why.
    #[test]
    fn a_tls_alert_record_is_plaintext_and_named() {
        let TlsRecord::Whole(_, line) = tls_record(&[21, 3, 3, 0, 2, 2, 50]) else {
            panic!("a whole alert record");
        };
        assert!(line.ends_with("plaintext: fatal decode_error"), "{line}");
        assert!(!line.contains("encrypted"), "{line}");
    }

    /// The change_cipher_spec record every TLS 1.3 handshake sends (rustls
    /// too) says it carries nothing: unlabelled, it read as where
    /// encryption begins.
    #[test]
    fn a_change_cipher_spec_record_says_it_carries_nothing() {
        let TlsRecord::Whole(6, line) = tls_record(&[20, 3, 3, 0, 1, 1]) else {
            panic!("a whole change_cipher_spec record");
        };
        assert!(
            line.ends_with("plaintext, carries nothing (a TLS 1.2 look-alike for middleboxes)"),
            "{line}"
        );
    }

    /// Two segments of a connection that reach the capture the other way
    /// round (two CPUs' queues) are put back in order: nothing was missed.
    /// A segment that never comes is a gap once more have come after it.
    #[test]
    fn segments_that_come_out_of_order_are_put_back_in_order() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let syn = frame(99, true, &[]);
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let follow = |sniffer: &mut Sniffer, seq: u32, body: &[u8]| {
            sniffer.follow(&Segment::parse(&frame(seq, false, &application_data(body))).unwrap())
        };
        // Records of 8 bytes: at 100, 108, 116, ...
        assert!(follow(&mut sniffer, 108, b"two").is_empty());
        let lines = follow(&mut sniffer, 100, b"one");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|line| line.contains("TLS application_data        3 bytes")),
            "{lines:?}"
        );
        // The segment at 116 is lost: held for three more, then given up.
        for seq in [124, 132, 140] {
            assert!(follow(&mut sniffer, seq, b"ccc").is_empty());
        }
        let lines = follow(&mut sniffer, 148, b"ddd");
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(
            lines[0].contains("the capture missed 8 bytes here"),
            "{lines:?}"
        );
        // A segment held when the connection ends (a bare FIN) is shown,
        // after the gap before it: nothing will come to fill that.
        assert!(follow(&mut sniffer, 164, b"fff").is_empty());
        let mut fin = frame(172, false, &[]);
        fin[14 + 20 + 13] = 0x11; // FIN, ACK
        let lines = sniffer.follow(&Segment::parse(&fin).unwrap());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("the capture missed 8 bytes here"),
            "{lines:?}"
        );

        // In plaintext, a PING that overtook the one before it is not the end
        // of what can be followed.
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let ping = |last: u8| {
            let mut frame = vec![0, 0, 8, 6, 0, 0, 0, 0, 0];
            frame.extend([0, 0, 0, 0, 0, 0, 0, last]);
            frame
        };
        let at = 100 + H2_PREFACE.len() as u32;
        let lines = sniffer.follow(&Segment::parse(&frame(100, false, H2_PREFACE)).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        let second = frame(at + 17, false, &ping(2));
        assert!(sniffer.follow(&Segment::parse(&second).unwrap()).is_empty());
        let lines = sniffer.follow(&Segment::parse(&frame(at, false, &ping(1))).unwrap());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|line| line.contains("PING")), "{lines:?}");
    }

    /// Records that came whole between two gaps are each shown, after the
    /// gap before them, when the connection ends with them held: the second
    /// gap cut the first's record off unshown, and the two gaps read as one.
    /// Segments still held when the capture ends are shown, after their
    /// gap, as at a FIN (they were dropped unsaid). And a FIN that overtook
    /// the end of a record keeps its beginning, for the segment still to
    /// come to complete.
    #[test]
    fn records_between_gaps_are_shown_and_a_fin_ahead_keeps_what_is_held() {
        let follow = |sniffer: &mut Sniffer, seq: u32, payload: &[u8]| {
            sniffer.follow(&Segment::parse(&frame(seq, false, payload)).unwrap())
        };
        // A sniffer that saw the connection's SYN.
        let connected = || {
            let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
            let syn = frame(99, true, &[]);
            assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
            sniffer
        };
        let fin = |sniffer: &mut Sniffer, seq: u32| {
            let mut fin = frame(seq, false, &[]);
            fin[14 + 20 + 13] = 0x11; // FIN, ACK
            sniffer.follow(&Segment::parse(&fin).unwrap())
        };
        let mut sniffer = connected();
        // Records of 8 bytes at 100, 108, ...: those at 108 and 124 missed.
        assert_eq!(
            follow(&mut sniffer, 100, &application_data(b"aaa")).len(),
            1
        );
        assert!(follow(&mut sniffer, 116, &application_data(b"ccc")).is_empty());
        assert!(follow(&mut sniffer, 132, &application_data(b"eee")).is_empty());
        let lines = fin(&mut sniffer, 140);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        for gap in [&lines[0], &lines[2]] {
            assert!(
                gap.contains("the capture missed 8 bytes here"),
                "{lines:#?}"
            );
        }
        for record in [&lines[1], &lines[3]] {
            assert!(
                record.contains("TLS application_data        3 bytes"),
                "{lines:#?}"
            );
        }

        // Held when the capture ends, they are shown as at a FIN.
        let mut sniffer = connected();
        assert_eq!(
            follow(&mut sniffer, 100, &application_data(b"aaa")).len(),
            1
        );
        assert!(follow(&mut sniffer, 116, &application_data(b"ccc")).is_empty());
        let lines = sniffer.finish();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].contains("the capture missed 8 bytes here"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("10.0.0.1:40000 -> "), "{lines:#?}");
        assert!(sniffer.finish().is_empty(), "shown once");

        let mut sniffer = connected();
        let record = application_data(b"eleven byte");
        assert!(follow(&mut sniffer, 100, &record[..8]).is_empty());
        assert!(fin(&mut sniffer, 116).is_empty());
        let lines = follow(&mut sniffer, 108, &record[8..]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains("TLS application_data       11 bytes"),
            "{lines:#?}"
        );
    }

    /// A frame of a type an extension defines (PRIORITY_UPDATE, 0x10) is
    /// shown and passed over, as HTTP/2 asks: it does not end what can be
    /// followed of the connection.
    #[test]
    fn a_frame_of_an_extensions_type_is_passed_over() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let syn = frame(99, true, &[]);
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let mut stream = H2_PREFACE.to_vec();
        stream.extend([0, 0, 4, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        stream.extend([0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        let lines = sniffer.follow(&Segment::parse(&frame(100, false, &stream)).unwrap());
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].contains("H2 frame type 16 stream 0 4 bytes"),
            "{lines:?}"
        );
        assert!(lines[2].contains("H2 PING"), "{lines:?}");
    }

    /// Packets the capture missed leave the stream mid-record: the view
    /// says so and resumes at the next record, rather than read ciphertext
    /// as a record header ("TLS record type 173").
    #[test]
    fn after_a_gap_tls_resumes_at_the_next_record() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        // A gap at once (`segments_that_come_out_of_order_are_put_back_in_order`
        // shows the wait for a late segment).
        sniffer.hold_early = 0;
        let syn = frame(99, true, &[]);
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let first = application_data(b"one");
        let lines = sniffer.follow(&Segment::parse(&frame(100, false, &first)).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        // A 45-byte record whose first 25 bytes were missed, then a whole one.
        let lost = application_data(&[0xad; 40]);
        let mut after_gap = lost[25..].to_vec();
        after_gap.extend_from_slice(&application_data(b"two"));
        let seq = 100 + first.len() as u32 + 25;
        let lines = sniffer.follow(&Segment::parse(&frame(seq, false, &after_gap)).unwrap());
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains(
                "the capture missed 25 bytes here, and skipped 20 bytes more to the next TLS record"
            ),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("TLS application_data        3 bytes"),
            "{lines:?}"
        );
    }

    /// A resync can land on ciphertext that looks like a record header. The
    /// header after that fake record then cannot be one: the stream is out
    /// of step, and resumes at the next record, instead of waiting for a
    /// made-up length and showing "TLS record type 173" for good.
    #[test]
    fn tls_out_of_step_after_a_false_resync_resumes_at_the_next_record() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        // A gap at once (`segments_that_come_out_of_order_are_put_back_in_order`
        // shows the wait for a late segment).
        sniffer.hold_early = 0;
        let syn = frame(99, true, &[]);
        assert!(sniffer.follow(&Segment::parse(&syn).unwrap()).is_empty());
        let one = [23, 3, 3, 0, 3, b'o', b'n', b'e'];
        assert_eq!(
            sniffer
                .follow(&Segment::parse(&frame(100, false, &one)).unwrap())
                .len(),
            1
        );
        // After a 25-byte gap: ciphertext, a fake header with 4 bytes of
        // "body", more ciphertext, then a real record.
        let mut after_gap = vec![0x9c; 10];
        after_gap.extend([23, 3, 3, 0, 4, 1, 2, 3, 4]);
        after_gap.extend([0xad; 20]);
        after_gap.extend([23, 3, 3, 0, 3, b't', b'w', b'o']);
        let seq = 100 + one.len() as u32 + 25;
        let lines = sniffer.follow(&Segment::parse(&frame(seq, false, &after_gap)).unwrap());
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[0].contains("the capture missed 25 bytes here, and skipped 10 bytes more"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("application_data        4 bytes"),
            "{lines:?}"
        );
        assert!(
            lines[2].ends_with(
                "(out of step with this connection's TLS records, which an earlier gap can \
                 leave: skipped 20 bytes to the next one)"
            ),
            "{lines:?}"
        );
        assert!(
            lines[3].contains("application_data        3 bytes"),
            "{lines:?}"
        );
    }

    /// A direction joined mid-frame before its other direction said a word
    /// is taken for TLS met mid-record, for want of better. Once the other
    /// direction shows plaintext HTTP/2, it is said to be plaintext that
    /// cannot be followed, not searched for TLS records (and, were its bytes
    /// to look like one, shown as "encrypted" on a plaintext cluster).
    #[test]
    fn a_plaintext_direction_taken_for_tls_is_corrected_by_the_other_direction() {
        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        let lines = sniffer.follow(&Segment::parse(&frame(500, false, &[0x41; 30])).unwrap());
        assert!(lines.is_empty(), "{lines:?}");
        // The other direction speaks plaintext HTTP/2.
        assert!(
            sniffer
                .follow(&ping_from_the_server())
                .last()
                .is_some_and(|l| l.ends_with("H2 PING"))
        );
        let mut more = vec![0x41; 10];
        more.extend([23, 3, 3, 0, 1, 0xaa]);
        let lines = sniffer.follow(&Segment::parse(&frame(530, false, &more)).unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("joined this plaintext connection mid-frame"),
            "{lines:?}"
        );
    }

    /// On loopback each frame is read twice, and only once goes to the file;
    /// a third copy (a real retransmission) and other interfaces' frames are kept.
    #[test]
    fn a_capture_file_gets_each_loopback_frame_once() {
        let mut echoes = LoopbackEchoes::default();
        let looped = frame(1, false, b"x"); // all-zero MAC addresses
        assert!(!echoes.is_echo(&looped));
        assert!(echoes.is_echo(&looped));
        assert!(!echoes.is_echo(&looped), "a retransmission is kept");
        let mut ethernet = frame(2, false, b"y");
        ethernet[..12].copy_from_slice(&[2, 66, 172, 18, 0, 3, 2, 66, 172, 18, 0, 2]);
        assert!(!echoes.is_echo(&ethernet));
        assert!(!echoes.is_echo(&ethernet));
        // A burst of 200 frames, then their echoes: each echo is known.
        let burst: Vec<Vec<u8>> = (0..200)
            .map(|i| frame(100 + i, false, format!("{i}").as_bytes()))
            .collect();
        assert!(burst.iter().all(|f| !echoes.is_echo(f)));
        assert!(burst.iter().all(|f| echoes.is_echo(f)));
    }

    #[test]
    fn a_path_with_control_bytes_is_shown_escaped() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode([(&b":path"[..], &b"/\x1b[2Jcleared"[..])]);
        let mut frame_bytes = vec![0, 0, block.len() as u8, 0x1, 0x4, 0, 0, 0, 1];
        frame_bytes.extend_from_slice(&block);
        let (mut decoder, mut lost) = (hpack_decoder(), false);
        let hpack = Hpack {
            decoder: &mut decoder,
            joined_late: false,
            lost: &mut lost,
        };
        let (_, line) = h2_frame(&frame_bytes, hpack).unwrap();
        assert!(line.contains(":path /\\u{1b}[2Jcleared"), "{line}");
        assert!(!line.contains('\x1b'), "{line:?}");
    }

    #[test]
    fn plaintext_http2_shows_the_method_and_the_readable_bytes() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (&b":path"[..], &b"/clusterlab.v1.KeyValue/Put"[..]),
        ]);
        let mut stream = H2_PREFACE.to_vec();
        let frame_of = |kind: u8, flags: u8, payload: &[u8]| {
            let len = payload.len();
            let mut f = vec![
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                kind,
                flags,
                0,
                0,
                0,
                1,
            ];
            f.extend_from_slice(payload);
            f
        };
        stream.extend(frame_of(0x1, 0x4, &block));
        let mut message = vec![0, 0, 0, 0, 20, 0x0a, 7];
        message.extend_from_slice(b"the-key\x12\x09the-value");
        stream.extend(frame_of(0x0, 0x1, &message));

        let mut sniffer = Sniffer::new(vec![7000], Names::numeric());
        sniffer.follow(&Segment::parse(&frame(0, true, &[])).unwrap());
        let lines = sniffer.follow(&Segment::parse(&frame(1, false, &stream)).unwrap());
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("preface"));
        assert!(
            lines[1].contains(":path /clusterlab.v1.KeyValue/Put"),
            "{lines:#?}"
        );
        assert!(lines[2].contains("\"the-key\""), "{lines:#?}");
        assert!(lines[2].contains("\"the-value\""), "{lines:#?}");
    }

    #[test]
    fn each_end_is_named_once_dns_has_named_it() {
        let (asked, questions) = mpsc::channel();
        // DNS answers only once the first line is out: a slow resolver.
        let (answer, first_line_out) = mpsc::channel::<()>();
        let names = Names::looked_up_by(Duration::ZERO, move || {
            let mut first_line_out = Some(first_line_out);
            move |ip: IpAddr| {
                if let Some(gate) = first_line_out.take() {
                    let _ = gate.recv();
                }
                asked.send(ip).unwrap();
                (ip == IpAddr::from([10, 0, 0, 2])).then(|| "clusterlab-balancer-1".to_string())
            }
        });
        let mut sniffer = Sniffer::new(vec![7000], names);
        let record = [23, 3, 3, 0, 1, 0];
        let line = |sniffer: &mut Sniffer, seq: u32| {
            let lines = sniffer.follow(&Segment::parse(&frame(seq, false, &record)).unwrap());
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines[0].clone()
        };
        sniffer.follow(&Segment::parse(&frame(0, true, &[])).unwrap());
        // A slow resolver holds up the first line only so long (here, not at
        // all): then it shows the addresses.
        let first = line(&mut sniffer, 1);
        assert!(
            first.starts_with("10.0.0.1:40000 -> 10.0.0.2:7000 "),
            "{first}"
        );
        answer.send(()).unwrap();
        // Wait for the lookups, by a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 1 + record.len() as u32;
        let named = loop {
            let next = line(&mut sniffer, seq);
            seq += record.len() as u32;
            if !next.contains("10.0.0.2") || Instant::now() > deadline {
                break next;
            }
            std::thread::yield_now();
        };
        // DNS named one end: the container's name, without its network. The
        // other end had no name and keeps its address.
        assert!(
            named.starts_with("10.0.0.1:40000 -> clusterlab-balancer-1:7000 "),
            "{named}"
        );
        assert!(named.contains("application_data"), "{named}");
        // Both ends were asked about, once each.
        let asked: Vec<IpAddr> = questions.try_iter().collect();
        assert_eq!(
            asked,
            [IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])],
            "each address is looked up once"
        );
    }

    /// DNS that answers in a moment names a new connection's ends on its
    /// very first line: the TLS handshake a learner looks for.
    #[test]
    fn a_new_connections_first_line_waits_a_moment_for_names() {
        let names = Names::looked_up_by(Duration::from_secs(60), move || {
            move |ip: IpAddr| {
                let names = [
                    ("10.0.0.1", "clusterlab-client-run-aaaa"),
                    ("10.0.0.2", "clusterlab-balancer-1"),
                ];
                names
                    .iter()
                    .find(|(addr, _)| ip.to_string() == *addr)
                    .map(|(_, name)| name.to_string())
            }
        });
        let mut sniffer = Sniffer::new(vec![7000], names);
        sniffer.follow(&Segment::parse(&frame(0, true, &[])).unwrap());
        let record = [23, 3, 3, 0, 1, 0];
        let lines = sniffer.follow(&Segment::parse(&frame(1, false, &record)).unwrap());
        assert!(
            lines[0].starts_with("clusterlab-client-run-aaaa:40000 -> clusterlab-balancer-1:7000 "),
            "{lines:?}"
        );
    }

    /// The units start in one column, whatever the route: one long route
    /// (a `compose run` container's) does not move the lines after it.
    #[test]
    fn a_long_route_moves_only_its_own_line() {
        let names = Names::looked_up_by(Duration::from_secs(60), move || {
            move |ip: IpAddr| {
                (ip == IpAddr::from([10, 0, 0, 3]))
                    .then(|| "clusterlab-client-run-5cf57ce5d175".to_string())
            }
        });
        let mut sniffer = Sniffer::new(vec![7000], names);
        let record = [23, 3, 3, 0, 1, 0];
        let mut line_from = |source: [u8; 4], seq: u32| {
            let lines =
                sniffer.follow(&Segment::parse(&frame_from(source, seq, false, &record)).unwrap());
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines[0].clone()
        };
        let before = line_from([10, 0, 0, 1], 1);
        let long = line_from([10, 0, 0, 3], 1);
        let after = line_from([10, 0, 0, 1], 7);
        let column = |line: &str| line.find("TLS ").unwrap();
        assert!(
            long.starts_with("clusterlab-client-run-5cf57ce5d175:40000 -> "),
            "{long}"
        );
        assert!(column(&long) > ROUTE_WIDTH, "{long}");
        assert_eq!(column(&before), ROUTE_WIDTH + 2, "{before}");
        assert_eq!(column(&after), column(&before), "{before}\n{long}\n{after}");
        // The compose cluster's own routes fit.
        let route = "clusterlab-balancer-1:60296 -> clusterlab-node-1:7100";
        assert!(route.len() <= ROUTE_WIDTH, "{route}");
    }

    #[test]
    fn a_new_connection_from_a_reused_address_is_named_afresh() {
        let (client, balancer) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let dns = Arc::new(Mutex::new(HashMap::from([
            (client, "clusterlab-client-run-aaaa"),
            (balancer, "clusterlab-balancer-1"),
        ])));
        let answers = dns.clone();
        let names = Names::looked_up_by(Duration::from_secs(60), move || {
            move |ip: IpAddr| answers.lock().unwrap().get(&ip).map(|n| n.to_string())
        });
        let mut sniffer = Sniffer::new(vec![7000], names);
        let record = [23, 3, 3, 0, 1, 0];
        // Sends records on a new connection until `done` holds for a line;
        // returns every line.
        let connect = |sniffer: &mut Sniffer, done: &dyn Fn(&str) -> bool| {
            sniffer.follow(&Segment::parse(&frame(0, true, &[])).unwrap());
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut lines = Vec::new();
            for seq in (1..).step_by(record.len()) {
                let line = sniffer.follow(&Segment::parse(&frame(seq, false, &record)).unwrap());
                lines.extend(line);
                if done(lines.last().unwrap()) || Instant::now() > deadline {
                    return lines;
                }
                std::thread::yield_now();
            }
            unreachable!()
        };
        let first = connect(&mut sniffer, &|line| {
            line.contains("run-aaaa") && line.contains("balancer-1")
        });
        let last = first.last().unwrap();
        assert!(
            last.starts_with("clusterlab-client-run-aaaa:40000 -> clusterlab-balancer-1:7000"),
            "{last}"
        );
        // That container is gone, and the next `run` has its address.
        dns.lock()
            .unwrap()
            .insert(client, "clusterlab-client-run-bbbb");
        let second = connect(&mut sniffer, &|line| line.contains("run-bbbb"));
        assert!(
            second.iter().all(|line| !line.contains("run-aaaa")),
            "the new connection was shown under the old container's name: {second:#?}"
        );
        assert!(second.last().unwrap().contains("run-bbbb"), "{second:#?}");
        // The balancer kept its name throughout.
        assert!(
            second
                .iter()
                .all(|line| line.contains("clusterlab-balancer-1:7000")),
            "{second:#?}"
        );
    }

    #[test]
    fn loopback_and_numeric_addresses_are_never_looked_up() {
        let (asked, questions) = mpsc::channel();
        let mut names = Names::looked_up_by(Duration::ZERO, move || {
            move |ip: IpAddr| {
                asked.send(ip).unwrap();
                Some("localhost".to_string())
            }
        });
        assert_eq!(
            names.label((IpAddr::from([127, 0, 0, 1]), 7000)),
            "127.0.0.1:7000"
        );
        let mut numeric = Names::numeric();
        assert_eq!(
            numeric.label((IpAddr::from([10, 0, 0, 2]), 7100)),
            "10.0.0.2:7100"
        );
        drop(names);
        // The lookup thread ends with `names`; it was never asked anything.
        assert_eq!(questions.iter().count(), 0);
    }

    /// `message` framed as gRPC sends it: no compression, 4 bytes of length.
    fn grpc(message: &impl prost::Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend(body);
        framed
    }

    #[test]
    fn a_whole_message_shows_each_text_field_on_its_own() {
        let put = proto::PutRequest {
            key: "secret".into(),
            value: b"hunter2".to_vec(),
            write_quorum: 0,
            request_id: "e439b4fc55c4d29d6bf3c2671f3777de".into(),
        };
        assert_eq!(
            readable(&grpc(&put)),
            r#""secret" "hunter2" "e439b4fc55c4d29d6bf3c2671f3777de""#
        );
        // Printable runs alone glue the value to the next field's tag and length.
        assert!(readable_runs(&grpc(&put)).contains(r#""hunter2\" e439"#));
        // A key is shown as the client shows it: no character in it hides,
        // and a quote in it is escaped.
        let hiding = proto::PutRequest {
            key: "ad\u{34f}min".into(),
            value: b"say \"hi\"".to_vec(),
            ..put.clone()
        };
        assert_eq!(
            readable(&grpc(&hiding)),
            r#""ad\u{34f}min" "say \"hi\"" "e439b4fc55c4d29d6bf3c2671f3777de""#
        );

        // Nested messages are read too; numbers are not text. A value with a
        // line break is still text.
        let get = proto::GetResponse {
            found: true,
            value: b"two\nlines".to_vec(),
            version: Some(proto::Version {
                wall_ms: 1_796_131_608_891,
                logical: 0,
                node: "n1".into(),
            }),
            trace: Some(proto::Trace {
                balancer: "balancer".into(),
                coordinator: "n2".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            readable(&grpc(&get)),
            r#""two\nlines" "n1" "balancer" "n2""#
        );
        // A nested message whose bytes are all printable or whitespace (a
        // quote, a form feed, two line breaks, a name) is still a message; a
        // short text that reads as a message of numbers is still text.
        let get = proto::GetResponse {
            value: b"hi".to_vec(),
            trace: Some(proto::Trace {
                attempts: vec![proto::Attempt {
                    node: "node-ten-x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(readable(&grpc(&get)), r#""hi" "node-ten-x""#);
    }

    #[test]
    fn bytes_and_parts_of_messages_show_their_printable_runs() {
        // A binary value: its printable runs, between the text fields.
        let put = proto::PutRequest {
            key: "photo".into(),
            value: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0".to_vec(),
            ..Default::default()
        };
        assert_eq!(readable(&grpc(&put)), r#""photo" "PNG" "IHDR""#);
        // A large message split over DATA frames: the first frame holds only
        // part of it, so it is read as bytes.
        let big = proto::PutRequest {
            key: "big".into(),
            value: vec![b'x'; 100],
            ..Default::default()
        };
        let framed = grpc(&big);
        assert!(grpc_text(&framed[..50]).is_none());
        assert!(readable(&framed[..50]).starts_with(r#""big""#));
        // Compressed messages are not protobuf to us.
        let mut compressed = grpc(&big);
        compressed[0] = 1;
        assert!(grpc_text(&compressed).is_none());
    }

    #[test]
    fn a_capture_in_the_compose_directory_says_where_the_host_sees_it() {
        let at = |path: &str, absolute: &str, in_compose| {
            wrote_where(3, Path::new(path), Some(Path::new(absolute)), in_compose)
        };
        let said = at("/captures/x.pcap", "/captures/x.pcap", true);
        assert!(said.starts_with("wrote 3 packets to /captures/x.pcap (in docker compose"));
        assert!(said.contains("./captures"), "{said}");
        // Written relative to the container's `/`, it is there too.
        let said = at("captures/x.pcap", "/captures/x.pcap", true);
        assert!(said.contains("on the host, in ./captures"), "{said}");
        // Elsewhere in the container, it goes with it.
        let said = at("x.pcap", "/x.pcap", true);
        assert!(
            said.contains("which `--rm` removes, file and all"),
            "{said}"
        );
        assert_eq!(
            at("x.pcap", "/home/me/x.pcap", false),
            "wrote 3 packets to x.pcap"
        );
        assert!(!at("/capturesx/x.pcap", "/capturesx/x.pcap", false).contains("compose"));
    }

    /// A capture file the sniff container cannot make (its image has no
    /// /tmp) says where in docker compose one can go: it gave the bare OS
    /// error.
    #[test]
    fn a_capture_file_that_cannot_be_made_in_compose_says_where_to_write() {
        let missing = std::io::Error::from_raw_os_error(2);
        let said = cannot_write(Path::new("/tmp/lab.pcap"), &missing, true);
        assert!(
            said.starts_with("cannot write /tmp/lab.pcap: No such file"),
            "{said}"
        );
        assert!(
            said.ends_with(
                "write under /captures (--pcap /captures/lab.pcap), which is ./captures beside \
                 docker-compose.yml on the host, or the directory CLUSTERLAB_CAPTURES names"
            ),
            "{said}"
        );
        let said = cannot_write(Path::new("/tmp/lab.pcap"), &missing, false);
        assert!(!said.contains("compose"), "{said}");
        // Under /captures already, in a directory not there.
        let said = cannot_write(Path::new("/captures/today/lab.pcap"), &missing, true);
        assert!(!said.contains("write under"), "{said}");
        assert!(
            said.ends_with("CLUSTERLAB_CAPTURES names: make the directory there"),
            "{said}"
        );
    }

    /// Only a refused permission is told to run as root; every refusal says
    /// what to do.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_that_cannot_be_opened_says_why() {
        let denied = socket_failure(std::io::Error::from_raw_os_error(1)).to_string();
        assert!(denied.contains("sniffing needs CAP_NET_RAW"), "{denied}");
        let unsupported = socket_failure(std::io::Error::from_raw_os_error(97)).to_string();
        assert!(
            unsupported.contains("this system has no packet sockets")
                && !unsupported.contains("root"),
            "{unsupported}"
        );
        // EMFILE: neither, and still a next step.
        let other = socket_failure(std::io::Error::from_raw_os_error(24)).to_string();
        assert!(
            other.contains("try again, or use the compose service") && !other.contains("root"),
            "{other}"
        );
    }

    #[test]
    fn other_traffic_is_not_tcp_over_ipv4() {
        let mut arp = frame(0, false, b"x");
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(Segment::parse(&arp), None);
        assert_eq!(Segment::parse(&[0u8; 10]), None);
    }
}
