//! The limits every request is checked against, and the checks.
//!
//! Limits keep one careless or hostile client from hurting everyone else: a huge
//! value would be held in memory on every replica and copied over the network N
//! times. Each check names what was wrong and what is allowed, so the person who
//! hit it knows what to change.

use certs::identity::MAX_NAME_LEN;
use prost::Message;
use proto::{
    DeleteRequest, DigestRequest, EventsRequest, GetRequest, LocalScanRequest, ProbeRequest,
    PutRequest, RangeRequest, ReadRequest, ScanRequest, SetFaultRequest, SetPolicyRequest,
    StatusRequest, Version, WhoAmIRequest, WriteRequest,
};

use crate::{Error, Result};

/// Sizes and scan limits: part of the wire contract, so they live with it.
pub use proto::limits::{
    DEFAULT_SCAN_LIMIT, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_REQUEST_ID_BYTES, MAX_SCAN_LIMIT,
    MAX_VALUE_BYTES,
};
/// The most bytes of keys and values one page of a scan holds (past its first
/// record, which may be a whole value on its own). A page of large values
/// ends early, with `more` set, so that it stays well inside
/// [`MAX_MESSAGE_BYTES`]: 100 values of 1 MiB would otherwise make a 100 MiB
/// answer that no client, balancer or coordinator accepts.
pub const MAX_SCAN_BYTES: usize = 2 * MAX_VALUE_BYTES;
/// The most key ranges anti-entropy may split the key space into.
pub const MAX_RANGES: u32 = 4096;
/// The most bytes of keys one request for records may name (anti-entropy's
/// step 3 asks for its keys in batches of this size): a peer's request may
/// cost a lookup and a few bytes of memory per key, not a message's worth of
/// one-byte keys.
pub const MAX_ASKED_KEY_BYTES: usize = 256 * 1024;
/// Versions from a peer may not claim a time after the year 3000 (in ms since
/// 1970): one absurd version would otherwise drag every clock that sees it
/// along to the end of time.
pub const MAX_WALL_MS: u64 = 32_503_680_000_000;

/// A key must be non-empty and at most [`MAX_KEY_BYTES`] bytes of UTF-8.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "the key is empty; give a key of 1 to 1024 bytes".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// A write's request id may be empty (no retry will be recognised), and at
/// most [`MAX_REQUEST_ID_BYTES`] bytes.
pub fn check_request_id(request_id: &str) -> Result<()> {
    if request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(Error::InvalidArgument(format!(
            "request_id is {} bytes; the limit is {MAX_REQUEST_ID_BYTES}",
            request_id.len()
        )));
    }
    Ok(())
}

/// A value may be empty, and at most [`MAX_VALUE_BYTES`] bytes.
pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// The number of entries a scan returns: the default for 0, else at most the maximum.
pub fn scan_limit(requested: u32) -> Result<usize> {
    match requested as usize {
        0 => Ok(DEFAULT_SCAN_LIMIT),
        n if n <= MAX_SCAN_LIMIT => Ok(n),
        n => Err(Error::InvalidArgument(format!(
            "scan limit {n} is too high; ask for 1 to {MAX_SCAN_LIMIT} and page with start_after"
        ))),
    }
}

/// What a page of a scan may still take as it fills: at most `limit` records
/// and, past the first, at most [`MAX_SCAN_BYTES`]. Every scan (a node's own
/// and the coordinator's merge) fills its page through one of these.
#[derive(Debug)]
pub struct ScanBudget {
    limit: usize,
    records: usize,
    bytes: usize,
}

impl ScanBudget {
    pub fn new(limit: usize) -> Self {
        ScanBudget {
            limit,
            records: 0,
            bytes: 0,
        }
    }

    /// Takes a record of `bytes` bytes if it fits; `false` when the page is
    /// full, and the scan should stop there and report that there is more.
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.is_full() || (self.records > 0 && self.bytes + bytes > MAX_SCAN_BYTES) {
            return false;
        }
        self.records += 1;
        self.bytes += bytes;
        true
    }

    /// No record, however small, fits any more.
    pub fn is_full(&self) -> bool {
        self.records == self.limit || self.bytes >= MAX_SCAN_BYTES
    }
}

/// A version stamped by a peer must be one our clocks can follow.
pub fn check_version(version: &Version) -> Result<()> {
    if version.wall_ms > MAX_WALL_MS {
        return Err(Error::InvalidArgument(format!(
            "version time {} ms is after the year 3000; the limit is {MAX_WALL_MS}",
            version.wall_ms
        )));
    }
    if version.logical > crate::version::MAX_LOGICAL {
        return Err(Error::InvalidArgument(format!(
            "version counter {} leaves no room above it; the limit is {}",
            version.logical,
            crate::version::MAX_LOGICAL
        )));
    }
    // The stamping node's name goes wherever the version goes (every copy,
    // every trace, log lines): a megabyte of name would make the key
    // unreadable, its answer past the clients' message limit. Its length
    // alone is checked: data stored before `--name` was checked may carry
    // names no node can have now, and must stay readable.
    if version.node.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "the version's node name is {} bytes; a node's name is at most {MAX_NAME_LEN}",
            version.node.len()
        )));
    }
    Ok(())
}

/// The node a peer's request names (`from`, `for_node`): at most
/// [`MAX_NAME_LEN`] bytes, as any node's name. It is logged, and kept in
/// the memory of refusals logged once in a while: a node certificate's
/// holder could fill both with megabytes of name a request.
fn check_peer_name(field: &str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "{field} is {} bytes; a node's name is at most {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

/// The most bytes of an address a probe's caller gives for itself (and so
/// of `--advertise`): a host name of 253, in brackets, a colon and a port fit.
pub const MAX_ADDR_BYTES: usize = 262;

/// Anti-entropy's key ranges: `range_count` in 1..=[`MAX_RANGES`], every
/// named range below it, and the node the comparison is for.
pub fn check_ranges(range_count: u32, ranges: &[u32], for_node: &str) -> Result<()> {
    if !(1..=MAX_RANGES).contains(&range_count) {
        return Err(Error::InvalidArgument(format!(
            "range_count is {range_count}; use 1 to {MAX_RANGES}"
        )));
    }
    // Only a range named twice can make more: each costs a lookup per range.
    if ranges.len() > range_count as usize {
        return Err(Error::InvalidArgument(format!(
            "{} ranges named, more than the {range_count} there are; name each once",
            ranges.len()
        )));
    }
    if let Some(bad) = ranges.iter().find(|r| **r >= range_count) {
        return Err(Error::InvalidArgument(format!(
            "range {bad} does not exist; ranges are 0 to {}",
            range_count - 1
        )));
    }
    if for_node.is_empty() {
        return Err(Error::InvalidArgument(
            "for_node is empty; name the node the comparison is for".into(),
        ));
    }
    check_peer_name("for_node", for_node)
}

/// What can be judged from a request alone, before any work is done for it.
/// The KeyValue and Replica handlers call it before any work of their own
/// (after the wait for `--capacity` and any injected fault; `Probe` before
/// its fault, and Admin's requests are checked where they are used);
/// the fuzz target calls it on whatever the decoder makes of random bytes.
pub trait Validate {
    fn validate(&self) -> Result<()>;
}

impl Validate for GetRequest {
    fn validate(&self) -> Result<()> {
        check_key(&self.key)
    }
}

impl Validate for PutRequest {
    fn validate(&self) -> Result<()> {
        check_key(&self.key)?;
        check_value(&self.value)?;
        check_request_id(&self.request_id)
    }
}

impl Validate for DeleteRequest {
    fn validate(&self) -> Result<()> {
        check_key(&self.key)?;
        check_request_id(&self.request_id)
    }
}

/// A scan's prefix may be empty, and is at most [`MAX_KEY_BYTES`]: no
/// longer one can match a key.
fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "prefix is {} bytes; no key is longer than {MAX_KEY_BYTES}, so none could match",
            prefix.len()
        )));
    }
    Ok(())
}

/// A scan's starting point may be empty (from the first key), and is at
/// most [`MAX_KEY_BYTES`]: it is a key, the last of the page before.
fn check_start_after(start_after: &str) -> Result<()> {
    if start_after.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "start_after is {} bytes, and keys are at most {MAX_KEY_BYTES}; give the key to \
             start after (the page before's next_start_after), or none to start at the first",
            start_after.len()
        )));
    }
    Ok(())
}

impl Validate for ScanRequest {
    fn validate(&self) -> Result<()> {
        check_prefix(&self.prefix)?;
        check_start_after(&self.start_after)?;
        scan_limit(self.limit).map(drop)
    }
}

impl Validate for WriteRequest {
    fn validate(&self) -> Result<()> {
        let record = self
            .record
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("the write carries no record".into()))?;
        check_record(record)?;
        check_peer_name("from", &self.from)
    }
}

/// A record a peer sends to be stored (a replica write, or anti-entropy's
/// copy): a key, value and request id within their limits, and a version.
pub fn check_record(record: &proto::Record) -> Result<()> {
    check_key(&record.key)?;
    check_value(&record.value)?;
    check_request_id(&record.request_id)?;
    // Stored without one, it would sit at the zero version, older than
    // every write, from a node named "".
    let version = record
        .version
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the record carries no version".into()))?;
    check_version(version)
}

impl Validate for ReadRequest {
    fn validate(&self) -> Result<()> {
        check_key(&self.key)?;
        check_peer_name("from", &self.from)
    }
}

impl Validate for LocalScanRequest {
    fn validate(&self) -> Result<()> {
        check_prefix(&self.prefix)?;
        check_start_after(&self.start_after)?;
        scan_limit(self.limit)?;
        check_peer_name("from", &self.from)
    }
}

impl Validate for DigestRequest {
    fn validate(&self) -> Result<()> {
        check_ranges(self.range_count, &self.ranges, &self.for_node)
    }
}

impl Validate for RangeRequest {
    fn validate(&self) -> Result<()> {
        check_ranges(self.range_count, &self.ranges, &self.for_node)?;
        let mut bytes = 0;
        for key in &self.keys {
            check_key(key)?;
            bytes += key.len();
        }
        if bytes > MAX_ASKED_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the keys asked for are {bytes} bytes; ask for at most {MAX_ASKED_KEY_BYTES} \
                 bytes of keys at a time"
            )));
        }
        Ok(())
    }
}

impl Validate for ProbeRequest {
    /// A probe tells us about the caller, whose address is kept, to be
    /// probed back: it must be one (HOST:PORT, as `--advertise` is), or it
    /// would be kept and warned of every round, never dialled.
    fn validate(&self) -> Result<()> {
        let caller = self.from.clone().unwrap_or_default();
        check_peer_name("the caller's name", &caller.name)?;
        if caller.addr.len() > MAX_ADDR_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the caller's address is {} bytes; HOST:PORT is at most {MAX_ADDR_BYTES}",
                caller.addr.len()
            )));
        }
        if !caller.addr.is_empty() {
            certs::flags::check_host_port("the caller's address", &caller.addr)
                .map_err(Error::InvalidArgument)?;
        }
        Ok(())
    }
}

impl Validate for SetFaultRequest {
    fn validate(&self) -> Result<()> {
        crate::fault::Fault::from_request(self)
            .map(drop)
            .map_err(|status| Error::InvalidArgument(status.message().to_string()))
    }
}

/// Admin's other requests carry nothing a node could judge: Status and WhoAmI
/// are empty, Events has one flag, and a policy name is the balancer's to
/// check (`balancer::policy::Policy::parse`). They are still fuzzed: decoding
/// them must not fail badly either.
macro_rules! nothing_to_check {
    ($($request:ty),+) => {
        $(impl Validate for $request {
            fn validate(&self) -> Result<()> {
                Ok(())
            }
        })+
    };
}

nothing_to_check!(
    StatusRequest,
    EventsRequest,
    WhoAmIRequest,
    SetPolicyRequest
);

/// The fuzz target's body (`tests/fuzz`), also run by the unit tests: the
/// first byte picks a request type, the rest is decoded as one, and whatever
/// decodes is validated and must survive an encode/decode round trip.
/// Panics are the bugs this looks for.
pub fn decode_and_validate(data: &[u8]) {
    fn check<T: Message + Default + Validate>(bytes: &[u8]) {
        let Ok(request) = T::decode(bytes) else {
            return;
        };
        let _ = request.validate();
        // Compared as bytes: a NaN field is not equal to itself.
        let encoded = request.encode_to_vec();
        let again = T::decode(encoded.as_slice()).expect("a message we encoded decodes again");
        assert!(
            again.encode_to_vec() == encoded,
            "the round trip changed the message"
        );
    }
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 15 {
        0 => check::<GetRequest>(bytes),
        1 => check::<PutRequest>(bytes),
        2 => check::<DeleteRequest>(bytes),
        3 => check::<ScanRequest>(bytes),
        4 => check::<WriteRequest>(bytes),
        5 => check::<ReadRequest>(bytes),
        6 => check::<LocalScanRequest>(bytes),
        7 => check::<DigestRequest>(bytes),
        8 => check::<RangeRequest>(bytes),
        9 => check::<ProbeRequest>(bytes),
        10 => check::<SetFaultRequest>(bytes),
        11 => check::<StatusRequest>(bytes),
        12 => check::<EventsRequest>(bytes),
        13 => check::<WhoAmIRequest>(bytes),
        _ => check::<SetPolicyRequest>(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_page_ends_at_its_count_or_its_bytes() {
        let mut by_count = ScanBudget::new(2);
        assert!(by_count.take(10) && by_count.take(10));
        assert!(by_count.is_full());
        assert!(!by_count.take(0), "the third of a page of two");

        let mut by_bytes = ScanBudget::new(100);
        // The first record is taken whatever its size: a page is never empty.
        assert!(by_bytes.take(MAX_SCAN_BYTES + 1));
        assert!(by_bytes.is_full());
        let mut by_bytes = ScanBudget::new(100);
        assert!(by_bytes.take(MAX_VALUE_BYTES));
        assert!(!by_bytes.take(MAX_VALUE_BYTES + 1), "past the byte limit");
        assert!(!by_bytes.is_full(), "a smaller record still fits");
        assert!(by_bytes.take(MAX_VALUE_BYTES));
        assert!(by_bytes.is_full());
    }

    /// A scan's prefix and starting key are bounded like a key (a prefix of
    /// nearly 4 MiB used to be copied to every member), and may be empty.
    #[test]
    fn a_scan_bound_longer_than_any_key_is_refused() {
        let scan = |prefix: &str, start_after: &str| ScanRequest {
            prefix: prefix.into(),
            start_after: start_after.into(),
            ..ScanRequest::default()
        };
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(scan("", "").validate().is_ok());
        assert!(scan(&long[1..], &long[1..]).validate().is_ok());
        let err = scan(&long, "").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "prefix is 1025 bytes; no key is longer than 1024, so none could match"
        );
        // A starting point is a key: not one that could match nothing.
        let err = scan("", &long).validate().unwrap_err().to_string();
        assert!(
            err.starts_with("start_after is 1025 bytes, and keys are at most 1024; give"),
            "{err}"
        );
        let local = LocalScanRequest {
            prefix: long,
            ..LocalScanRequest::default()
        };
        assert!(local.validate().is_err());
    }

    #[test]
    fn limits_name_the_size_and_the_limit() {
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        let err = check_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert_eq!(err.to_string(), "key is 1025 bytes; the limit is 1024");
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        let err = check_value(&vec![0; 2 * MAX_VALUE_BYTES]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value is 2097152 bytes; the limit is 1048576"
        );
        assert!(check_key("").is_err());
        assert!(check_request_id(&proto::new_request_id()).is_ok());
        let err = check_request_id(&"r".repeat(MAX_REQUEST_ID_BYTES + 1)).unwrap_err();
        assert_eq!(err.to_string(), "request_id is 129 bytes; the limit is 128");
        assert_eq!(scan_limit(0).unwrap(), DEFAULT_SCAN_LIMIT);
        assert!(scan_limit(5000).is_err());
    }

    #[test]
    fn versions_from_the_far_future_or_with_a_spent_counter_are_refused() {
        let version = |wall_ms, logical| Version {
            wall_ms,
            logical,
            node: "n1".into(),
        };
        assert!(check_version(&version(1_795_000_000_000, 7)).is_ok());
        let err = check_version(&version(u64::MAX, 0)).unwrap_err();
        assert!(err.to_string().contains("after the year 3000"), "{err}");
        assert!(check_version(&version(1, u32::MAX)).is_err());
        // The stamping node's name is no longer than a node's can be.
        let named = |node: String| Version {
            wall_ms: 1_795_000_000_000,
            logical: 0,
            node,
        };
        for (node, said) in [
            (
                "x".repeat(64),
                "node name is 64 bytes; a node's name is at most 63",
            ),
            ("x".repeat(1 << 20), "node name is 1048576 bytes;"),
        ] {
            let err = check_version(&named(node)).unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
        assert!(check_version(&named("x".repeat(63))).is_ok());
    }

    /// A peer names itself in at most a node name's bytes, and its address
    /// in at most a HOST:PORT's: a megabyte of either was logged and kept.
    #[test]
    fn a_peers_name_for_itself_is_no_longer_than_a_nodes() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let said = |result: Result<()>| result.unwrap_err().to_string();
        let write = WriteRequest {
            record: Some(proto::Record {
                key: "k".into(),
                version: Some(Version {
                    wall_ms: 1,
                    logical: 0,
                    node: "n1".into(),
                }),
                ..proto::Record::default()
            }),
            from: long.clone(),
        };
        assert_eq!(
            said(write.validate()),
            "from is 64 bytes; a node's name is at most 63"
        );
        let read = ReadRequest {
            key: "k".into(),
            from: long.clone(),
        };
        assert!(said(read.validate()).starts_with("from is 64 bytes"));
        let scan = LocalScanRequest {
            limit: 1,
            from: long.clone(),
            ..LocalScanRequest::default()
        };
        assert!(said(scan.validate()).starts_with("from is 64 bytes"));
        assert!(said(check_ranges(64, &[], &long)).starts_with("for_node is 64 bytes"));
        let probe = |name: &str, addr: String| ProbeRequest {
            from: Some(proto::Member {
                name: name.into(),
                addr,
                state: 0,
            }),
        };
        assert!(said(probe(&long, "a:1".into()).validate()).starts_with("the caller's name"));
        let far = probe("n2", "x".repeat(MAX_ADDR_BYTES + 1)).validate();
        assert!(said(far).starts_with("the caller's address is 263 bytes"));
        let nowhere = probe("n2", "my laptop".into()).validate();
        assert!(
            said(nowhere).starts_with("the caller's address \"my laptop\" is not HOST:PORT"),
            "{}",
            said(probe("n2", "my laptop".into()).validate())
        );
        // As long as they may be, they pass.
        let fits = format!("{}:65535", "x".repeat(256));
        assert!(probe(&"x".repeat(MAX_NAME_LEN), fits).validate().is_ok());
        assert!(ProbeRequest::default().validate().is_ok());
    }

    /// A peer's write must say its version: stored without one, it would
    /// sit at the zero version, from a node named "".
    #[test]
    fn a_replica_write_without_a_version_is_refused() {
        let write = |version| WriteRequest {
            record: Some(proto::Record {
                key: "k".into(),
                version,
                value: b"v".to_vec(),
                ..proto::Record::default()
            }),
            ..WriteRequest::default()
        };
        let err = write(None).validate().unwrap_err();
        assert_eq!(err.to_string(), "the record carries no version", "{err}");
        let version = Version {
            wall_ms: 1,
            logical: 0,
            node: "n1".into(),
        };
        assert!(write(Some(version)).validate().is_ok());
    }

    #[test]
    fn ranges_must_exist_and_name_a_node() {
        assert!(check_ranges(64, &[0, 63], "n2").is_ok());
        let err = check_ranges(64, &[64], "n2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "range 64 does not exist; ranges are 0 to 63"
        );
        assert!(check_ranges(0, &[], "n2").is_err());
        assert!(check_ranges(MAX_RANGES + 1, &[], "n2").is_err());
        assert!(check_ranges(64, &[], "").is_err());
        // Repeats past the number of ranges would cost a lookup each.
        let err = check_ranges(4, &[0; 5], "n2").unwrap_err();
        assert!(
            err.to_string().contains("5 ranges named, more than the 4"),
            "{err}"
        );
        assert!(check_ranges(4, &[0, 1, 2, 3], "n2").is_ok());
    }

    /// A request for records names what an honest peer would: keys, and no
    /// more of them at a time than anti-entropy asks for.
    #[test]
    fn records_asked_for_are_keys_of_a_bounded_total() {
        let asking = |keys: Vec<String>| RangeRequest {
            range_count: 64,
            for_node: "n2".into(),
            keys,
            ..RangeRequest::default()
        };
        let most = vec!["k".repeat(1024); MAX_ASKED_KEY_BYTES / 1024];
        assert!(asking(most.clone()).validate().is_ok());
        let err = asking([most, vec!["k".into()]].concat())
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the keys asked for are 262145 bytes; ask for at most 262144 bytes of keys at a time"
        );
        let err = asking(vec!["k".repeat(1025)]).validate().unwrap_err();
        assert_eq!(err.to_string(), "key is 1025 bytes; the limit is 1024");
        assert!(asking(vec![String::new()]).validate().is_err());
    }

    /// Valid encodings of every request type the fuzz target decodes: the
    /// mangling test's first inputs. (`scripts/fuzz` starts libFuzzer from an
    /// empty corpus; these are not given to it.)
    pub(crate) fn seeds() -> Vec<Vec<u8>> {
        let with = |which: u8, message: &dyn Fn() -> Vec<u8>| {
            let mut input = vec![which];
            input.extend(message());
            input
        };
        let record = proto::Record {
            key: "k".into(),
            version: Some(Version {
                wall_ms: 1,
                logical: 2,
                node: "n1".into(),
            }),
            value: b"v".to_vec(),
            ..proto::Record::default()
        };
        vec![
            with(0, &|| {
                GetRequest {
                    key: "k".into(),
                    read_quorum: 2,
                }
                .encode_to_vec()
            }),
            with(1, &|| {
                PutRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ..PutRequest::default()
                }
                .encode_to_vec()
            }),
            with(2, &|| {
                DeleteRequest {
                    key: "k".into(),
                    ..DeleteRequest::default()
                }
                .encode_to_vec()
            }),
            with(3, &|| {
                ScanRequest {
                    prefix: "a".into(),
                    limit: 10,
                    ..ScanRequest::default()
                }
                .encode_to_vec()
            }),
            with(4, &|| {
                WriteRequest {
                    record: Some(record.clone()),
                    ..WriteRequest::default()
                }
                .encode_to_vec()
            }),
            with(5, &|| {
                ReadRequest {
                    key: "k".into(),
                    from: "n1".into(),
                }
                .encode_to_vec()
            }),
            with(6, &|| {
                LocalScanRequest {
                    limit: 5,
                    ..LocalScanRequest::default()
                }
                .encode_to_vec()
            }),
            with(7, &|| {
                DigestRequest {
                    range_count: 64,
                    ranges: vec![1, 2],
                    for_node: "n2".into(),
                    ..DigestRequest::default()
                }
                .encode_to_vec()
            }),
            with(8, &|| {
                RangeRequest {
                    range_count: 64,
                    ranges: vec![3],
                    for_node: "n2".into(),
                    keys: vec!["k".into()],
                    ..RangeRequest::default()
                }
                .encode_to_vec()
            }),
            with(9, &|| {
                ProbeRequest {
                    from: Some(proto::Member {
                        name: "n1".into(),
                        addr: "n1:7100".into(),
                        ..proto::Member::default()
                    }),
                }
                .encode_to_vec()
            }),
            with(11, &|| StatusRequest {}.encode_to_vec()),
            with(12, &|| EventsRequest { history_only: true }.encode_to_vec()),
            with(13, &|| WhoAmIRequest {}.encode_to_vec()),
            with(14, &|| {
                SetPolicyRequest {
                    policy: "random".into(),
                }
                .encode_to_vec()
            }),
            with(10, &|| {
                SetFaultRequest {
                    node: "n1".into(),
                    latency_ms: 100,
                    error_rate: 0.5,
                    ..SetFaultRequest::default()
                }
                .encode_to_vec()
            }),
        ]
    }

    /// The fuzz target's body on the seeds, on every truncation of them and
    /// each of their bytes set in turn to a few telling values, and on crashes the fuzzer found (`tests/fuzz/regressions`),
    /// so CI runs it without the fuzzer.
    #[test]
    fn decoding_and_validating_mangled_requests_never_panics() {
        let mut inputs = seeds();
        for seed in seeds() {
            for cut in 0..seed.len() {
                inputs.push(seed[..cut].to_vec());
            }
            for at in 0..seed.len() {
                for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut changed = seed.clone();
                    changed[at] = byte;
                    inputs.push(changed);
                }
            }
        }
        let regressions =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/regressions");
        for entry in std::fs::read_dir(regressions).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "md") {
                inputs.push(std::fs::read(path).unwrap());
            }
        }
        assert!(inputs.len() > 400, "{} inputs", inputs.len());
        for input in &inputs {
            decode_and_validate(input);
        }
    }
}
