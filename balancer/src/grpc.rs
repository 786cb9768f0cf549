//! The little of gRPC's wire format the balancer reads.
//!
//! The balancer forwards `KeyValue` requests and responses as the bytes they
//! arrived as. It never decodes a value, and it never encodes a message again.
//! It reads four things:
//!
//! - the 5-byte prefix of each message: a compression flag and the length, so
//!   a message over the size limit is refused before its bytes arrive;
//! - field 1 of a request, the key (a scan's prefix), for `key-affinity`;
//! - whether a write carries a request id;
//! - the coordinator in a response's `Trace`, to learn the node's name.
//!
//! It writes two things, each appended to a message as one more field:
//!
//! - its own part of the trace (balancer, policy, choice, attempts), appended
//!   to the node's response as a second `trace` field. Protobuf parsers
//!   *merge* a message field that appears twice: strings set in the second
//!   copy win, and repeated fields (the attempts) are concatenated. So the
//!   client decodes one trace with the node's part and the balancer's part,
//!   exactly as if one program had built it;
//! - a request id, on a write that came without one (from grpcurl, say): a
//!   write is retried on another node only under an id that names it, so the
//!   node can tell a retry of a write it already applied from a new one.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use prost::{
    DecodeError, Message,
    bytes::Buf,
    encoding::{self, DecodeContext, WireType},
};
use proto::Trace;
use tonic::Status;

/// A compression flag (1 byte) and the message's length (4 bytes, big-endian).
const PREFIX_LEN: usize = 5;

/// The path of every `KeyValue` method starts with this.
pub const KEY_VALUE_PATH: &str = "/clusterlab.v1.KeyValue/";

/// The four `KeyValue` methods, and where each response keeps its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Delete,
    Scan,
}

impl Method {
    /// The method a request path names, such as `/clusterlab.v1.KeyValue/Get`.
    pub fn from_path(path: &str) -> Option<Method> {
        let name = path.strip_prefix(KEY_VALUE_PATH)?;
        Some(match name {
            "Get" => Method::Get,
            "Put" => Method::Put,
            "Delete" => Method::Delete,
            "Scan" => Method::Scan,
            _ => return None,
        })
    }

    /// Whether the call only reads. A read can be sent to another node at
    /// any time, even while the first still has it; a write cannot (see
    /// `Router::forward`).
    pub fn is_read(self) -> bool {
        matches!(self, Method::Get | Method::Scan)
    }

    /// The field number of `request_id` in this method's request (kv.proto),
    /// for the writes.
    fn request_id_field(self) -> Option<u32> {
        match self {
            Method::Put => Some(4),
            Method::Delete => Some(3),
            Method::Get | Method::Scan => None,
        }
    }

    /// The field number of `trace` in this method's response (kv.proto).
    fn trace_field(self) -> u32 {
        match self {
            Method::Get => 4,
            Method::Put | Method::Delete => 2,
            Method::Scan => 3,
        }
    }
}

/// One gRPC message as it crossed the wire: the prefix, then the message.
#[derive(Debug, Clone)]
pub struct Framed(Bytes);

impl Framed {
    /// The encoded message, without its prefix.
    pub fn message(&self) -> &[u8] {
        &self.0[PREFIX_LEN..]
    }

    /// Prefix and message, ready to send on.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Field 1 of a `KeyValue` request: the key, or for a scan the prefix.
    pub fn key(&self) -> Result<String, Status> {
        /// Every `KeyValue` request keeps its key in field 1; the decoder skips
        /// the other fields (the value among them) without copying them.
        /// (Its name shows in a decoding error: "Request.key: invalid string".)
        #[derive(Clone, PartialEq, Message)]
        struct Request {
            #[prost(string, tag = "1")]
            key: String,
        }
        Request::decode(self.message())
            .map(|keyed| keyed.key)
            .map_err(not_a_request)
    }

    /// Whether this request to `method`, a write, carries a request id: a
    /// `request_id` field that is not empty (the last copy wins). Reads carry none.
    pub fn carries_request_id(&self, method: Method) -> Result<bool, Status> {
        let Some(id_field) = method.request_id_field() else {
            return Ok(false);
        };
        let mut carries = false;
        self.read_field(id_field, |wire_type, buf, context| {
            if wire_type == WireType::LengthDelimited {
                // The id's length is all we need: read it from a copy of the
                // cursor, which the skip below then moves past the id.
                let mut length = *buf;
                carries = encoding::decode_varint(&mut length)? > 0;
            }
            encoding::skip_field(wire_type, id_field, buf, context)
        })
        .map_err(not_a_request)?;
        Ok(carries)
    }

    /// This write request to `method` with `id` appended as its request id.
    pub fn with_request_id(&self, method: Method, id: String) -> Framed {
        let field = method
            .request_id_field()
            .expect("only a write carries a request id");
        self.appended(encoding::string::encoded_len(field, &id), |out| {
            encoding::string::encode(field, &id, out)
        })
    }

    /// The coordinator named in the trace of a node's response to `method`:
    /// the node's own name. Only that field is decoded; the replicas' reports
    /// and the value are skipped.
    pub fn coordinator(&self, method: Method) -> Result<String, Status> {
        /// `Trace.coordinator` (trace.proto), alone.
        #[derive(Clone, PartialEq, Message)]
        struct Coordinator {
            #[prost(string, tag = "5")]
            coordinator: String,
        }
        let mut trace = Coordinator::default();
        self.read_field(method.trace_field(), |wire_type, buf, context| {
            encoding::message::merge(wire_type, &mut trace, buf, context)
        })
        .map_err(|e| Status::internal(format!("the node's response is not protobuf: {e}")))?;
        Ok(trace.coordinator)
    }

    /// Walks the message's fields and hands every copy of field `wanted` to
    /// `merge`, as a decoder would; the other fields are skipped, not copied.
    fn read_field(
        &self,
        wanted: u32,
        mut merge: impl FnMut(WireType, &mut &[u8], DecodeContext) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut buf = self.message();
        while buf.has_remaining() {
            let (field, wire_type) = encoding::decode_key(&mut buf)?;
            let context = DecodeContext::default();
            match field == wanted {
                true => merge(wire_type, &mut buf, context)?,
                false => encoding::skip_field(wire_type, field, &mut buf, context)?,
            }
        }
        Ok(())
    }

    /// This response with `ours` appended as a second `trace` field, which a
    /// decoder merges into the node's trace (see the module's documentation).
    pub fn with_trace(&self, method: Method, ours: &Trace) -> Framed {
        let field = method.trace_field();
        self.appended(encoding::message::encoded_len(field, ours), |out| {
            encoding::message::encode(field, ours, out)
        })
    }

    /// This message with a field of `field_len` bytes appended, written by `encode`.
    fn appended(&self, field_len: usize, encode: impl FnOnce(&mut BytesMut)) -> Framed {
        let message = self.message();
        let length = message.len() + field_len;
        let mut out = BytesMut::with_capacity(PREFIX_LEN + length);
        out.put_u8(0);
        out.put_u32(length as u32);
        out.put_slice(message);
        encode(&mut out);
        Framed(out.freeze())
    }
}

/// The single message of a unary call's body, and the trailers that end it.
#[derive(Debug)]
pub struct Unary {
    pub message: Option<Framed>,
    pub trailers: Option<HeaderMap>,
}

/// Reads the body of a unary request or response: at most one message, of at
/// most `limit` bytes. The length is checked as soon as the prefix is in, so a
/// message that claims a gigabyte is refused without reading the gigabyte.
pub async fn read_unary<B>(mut body: B, limit: usize) -> Result<Unary, Status>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    let mut buf = Collected::default();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame?.into_data() {
            Ok(data) => {
                buf.push(data);
                check_prefix(buf.as_slice(), limit)?;
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(map) = frame.into_trailers() {
            trailers = Some(map);
        }
    }
    let buf = buf.into_bytes();
    let message = match buf.len() {
        0 => None,
        n if n < PREFIX_LEN => {
            return Err(Status::internal(format!(
                "the body ended {n} bytes into a message's 5-byte prefix"
            )));
        }
        n => {
            let length = u32::from_be_bytes(buf[1..PREFIX_LEN].try_into().expect("4 bytes"));
            // More than the prefix announced was refused as it arrived
            // (`check_prefix`), so here the body can only have ended early.
            if n < PREFIX_LEN + length as usize {
                return Err(Status::internal(format!(
                    "the body ended after {} of the {length} bytes its message's prefix \
                     announced",
                    n - PREFIX_LEN
                )));
            }
            Some(Framed(buf))
        }
    };
    Ok(Unary { message, trailers })
}

/// A body's bytes so far. A small message comes in one DATA frame, and that
/// frame is kept as it came; only a message split over several is copied
/// into one buffer. An empty frame adds nothing: tonic's clients end each
/// request with one (its body does not say it has ended after its message,
/// so hyper sends END_STREAM on a DATA frame of its own).
#[derive(Debug, Default)]
enum Collected {
    #[default]
    Nothing,
    One(Bytes),
    Joined(BytesMut),
}

impl Collected {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        *self = match std::mem::take(self) {
            Collected::Nothing => Collected::One(data),
            Collected::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                Collected::Joined(joined)
            }
            Collected::Joined(mut joined) => {
                joined.extend_from_slice(&data);
                Collected::Joined(joined)
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Collected::Nothing => &[],
            Collected::One(bytes) => bytes,
            Collected::Joined(bytes) => bytes,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Collected::Nothing => Bytes::new(),
            Collected::One(bytes) => bytes,
            Collected::Joined(bytes) => bytes.freeze(),
        }
    }
}

/// A request whose fields the balancer cannot read (not protobuf, or a key
/// that is not UTF-8 text): INTERNAL, as gRPC has a server answer a request
/// it cannot parse (and as the nodes do), in words that say whose mistake.
fn not_a_request(e: prost::DecodeError) -> Status {
    Status::internal(format!(
        "the request is not a clusterlab.v1 message the balancer can read ({e}); keys are \
         UTF-8 text"
    ))
}

/// Refuses a compressed message, or one larger than `limit`, from its prefix,
/// and bytes beyond the one message the prefix announced as soon as they come
/// (so what the balancer holds never exceeds the limit).
fn check_prefix(buf: &[u8], limit: usize) -> Result<(), Status> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(());
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "the message is compressed, and the balancer forwards only uncompressed \
             messages (leave grpc-encoding unset)",
        ));
    }
    let length = u32::from_be_bytes(prefix[1..].try_into().expect("4 bytes")) as usize;
    if length > limit {
        // The wording of tonic's own check, which the nodes use, and the
        // limit a learner is more likely to have met: the value's, which is
        // lower (a 4 MiB value would only be refused again, by the node).
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {length} bytes, \
             the limit is: {limit} bytes (and a value may be at most {} bytes)",
            proto::limits::MAX_VALUE_BYTES
        )));
    }
    if buf.len() > PREFIX_LEN + length {
        return Err(Status::internal(
            "a unary call carries one message, and more bytes followed it; \
             send exactly one message per unary call",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use proto::{
        Attempt, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest, PutResponse,
        ReplicaReport, ScanRequest, ScanResponse,
    };

    fn framed(message: &impl Message) -> Framed {
        let encoded = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
        Framed(out.into())
    }

    fn body(
        frames: Vec<Result<Frame<Bytes>, Status>>,
    ) -> impl Body<Data = Bytes, Error = Status> + Unpin {
        StreamBody::new(futures::stream::iter(frames))
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn methods_are_read_from_the_path() {
        assert_eq!(
            Method::from_path("/clusterlab.v1.KeyValue/Scan"),
            Some(Method::Scan)
        );
        assert_eq!(Method::from_path("/clusterlab.v1.KeyValue/Watch"), None);
        assert_eq!(Method::from_path("/clusterlab.v1.Admin/Get"), None);
    }

    #[test]
    fn the_key_is_read_without_the_rest() {
        let request = GetRequest {
            key: "user:42".into(),
            read_quorum: 3,
        };
        assert_eq!(framed(&request).key().unwrap(), "user:42");
        // Not protobuf, and a key that is not UTF-8: the sender's mistake,
        // named as such.
        let garbage = Framed(Bytes::from_static(&[0, 0, 0, 0, 3, 0x0a, 0xc8, 0x01]));
        let not_utf8 = Framed(Bytes::from_static(&[0, 0, 0, 0, 3, 0x0a, 0x01, 0xff]));
        for framed in [garbage, not_utf8] {
            let err = framed.key().unwrap_err();
            assert_eq!(err.code(), tonic::Code::Internal, "{err}");
            assert!(
                err.message().starts_with(
                    "the request is not a clusterlab.v1 message the balancer can read \
                     (failed to decode Protobuf message"
                ),
                "{err}"
            );
        }
    }

    /// A write without a request id is given one, appended; the rest of the
    /// message, the value included, decodes as it was sent.
    #[test]
    fn a_write_without_a_request_id_is_given_one() {
        let put = PutRequest {
            key: "k".into(),
            value: b"value".to_vec(),
            write_quorum: 2,
            request_id: String::new(),
        };
        let framed_put = framed(&put);
        assert!(!framed_put.carries_request_id(Method::Put).unwrap());
        let given = framed_put.with_request_id(Method::Put, "abc".into());
        assert!(given.carries_request_id(Method::Put).unwrap());
        assert_eq!(
            PutRequest::decode(given.message()).unwrap(),
            PutRequest {
                request_id: "abc".into(),
                ..put.clone()
            }
        );
        let sent_with_one = framed(&PutRequest {
            request_id: "the client's".into(),
            ..put
        });
        assert!(sent_with_one.carries_request_id(Method::Put).unwrap());
        // The last copy of a field wins, for the balancer as for the node.
        let emptied = sent_with_one.with_request_id(Method::Put, String::new());
        assert!(!emptied.carries_request_id(Method::Put).unwrap());

        let delete = DeleteRequest {
            key: "k".into(),
            ..DeleteRequest::default()
        };
        let given = framed(&delete).with_request_id(Method::Delete, "abc".into());
        assert_eq!(
            DeleteRequest::decode(given.message()).unwrap().request_id,
            "abc"
        );
        let get = framed(&GetRequest {
            key: "k".into(),
            read_quorum: 0,
        });
        assert!(
            !get.carries_request_id(Method::Get).unwrap(),
            "reads carry none"
        );
    }

    /// The balancer's part, appended, and the node's part come out as one trace.
    #[test]
    fn an_appended_trace_merges_into_the_nodes() {
        let node_part = Trace {
            coordinator: "n2".into(),
            quorum: 2,
            replicas: vec![ReplicaReport {
                node: "n3".into(),
                ..ReplicaReport::default()
            }],
            ..Trace::default()
        };
        let response = GetResponse {
            found: true,
            value: b"hello".to_vec(),
            trace: Some(node_part.clone()),
            ..GetResponse::default()
        };
        let from_node = framed(&response);
        assert_eq!(from_node.coordinator(Method::Get).unwrap(), "n2");

        let ours = Trace {
            balancer: "lb".into(),
            policy: "round-robin".into(),
            choice: "next in turn".into(),
            attempts: vec![Attempt {
                node: "n2".into(),
                outcome: "OK".into(),
                ..Attempt::default()
            }],
            ..Trace::default()
        };
        let forwarded = from_node.with_trace(Method::Get, &ours);
        let decoded = GetResponse::decode(forwarded.message()).unwrap();
        assert_eq!(decoded.value, b"hello");
        let trace = decoded.trace.unwrap();
        assert_eq!(trace.coordinator, "n2");
        assert_eq!(trace.replicas, node_part.replicas);
        assert_eq!(trace.balancer, "lb");
        assert_eq!(trace.choice, "next in turn");
        assert_eq!(trace.attempts, ours.attempts);
        // The prefix announces the new length.
        let announced = u32::from_be_bytes(forwarded.0[1..5].try_into().unwrap()) as usize;
        assert_eq!(announced, forwarded.message().len());
    }

    /// The field numbers in `Method` are kv.proto's: checked against the
    /// generated types, so a renumbered field fails here, not in a trace.
    #[test]
    fn every_method_finds_the_trace_and_the_key_where_kv_proto_puts_them() {
        let trace = Some(Trace {
            coordinator: "n3".into(),
            ..Trace::default()
        });
        let responses = [
            (
                Method::Get,
                framed(&GetResponse {
                    value: b"v".to_vec(),
                    trace: trace.clone(),
                    ..GetResponse::default()
                }),
            ),
            (
                Method::Put,
                framed(&PutResponse {
                    trace: trace.clone(),
                    ..PutResponse::default()
                }),
            ),
            (
                Method::Delete,
                framed(&DeleteResponse {
                    trace: trace.clone(),
                    ..DeleteResponse::default()
                }),
            ),
            (
                Method::Scan,
                framed(&ScanResponse {
                    more: true,
                    trace: trace.clone(),
                    ..ScanResponse::default()
                }),
            ),
        ];
        for (method, response) in responses {
            assert_eq!(response.coordinator(method).unwrap(), "n3", "{method:?}");
        }
        let keyed = [
            framed(&PutRequest {
                key: "a".into(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            }),
            framed(&DeleteRequest {
                key: "a".into(),
                ..DeleteRequest::default()
            }),
            framed(&ScanRequest {
                prefix: "a".into(),
                start_after: "b".into(),
                ..ScanRequest::default()
            }),
        ];
        for request in keyed {
            assert_eq!(request.key().unwrap(), "a");
        }
    }

    #[test]
    fn a_body_is_read_whole_with_its_trailers() {
        let message = framed(&GetRequest {
            key: "key".into(),
            read_quorum: 0,
        })
        .into_bytes();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        // In one frame, and split over two and three (the prefix itself split).
        for cuts in [vec![], vec![3], vec![2, 7]] {
            let mut frames = Vec::new();
            let mut from = 0;
            for to in cuts.iter().copied().chain([message.len()]) {
                frames.push(Ok(Frame::data(message.slice(from..to))));
                from = to;
            }
            frames.push(Ok(Frame::trailers(trailers.clone())));
            let unary = block_on(read_unary(body(frames), 1024)).unwrap();
            let read = unary.message.unwrap();
            assert_eq!(read.key().unwrap(), "key", "cut at {cuts:?}");
            assert_eq!(read.into_bytes(), message, "cut at {cuts:?}");
            assert_eq!(unary.trailers.unwrap()["grpc-status"], "0");
        }
    }

    /// A message that came in one frame is passed on as those bytes: the
    /// balancer does not copy it.
    #[test]
    fn a_message_in_one_frame_is_not_copied() {
        let message = framed(&GetRequest::default()).into_bytes();
        // Followed by an empty frame ending the stream, as tonic's clients send it.
        let end = Frame::data(Bytes::new());
        for frames in [
            vec![Frame::data(message.clone())],
            vec![Frame::data(message.clone()), end],
        ] {
            let unary = block_on(read_unary(body(frames.into_iter().map(Ok).collect()), 64));
            let read = unary.unwrap().message.unwrap().into_bytes();
            assert_eq!(read.as_ptr(), message.as_ptr());
        }
    }

    /// The body never ends, yet the answer comes: the prefix alone decides.
    #[test]
    fn an_oversized_message_is_refused_from_its_prefix() {
        let prefix = Bytes::from_static(&[0, 0x40, 0, 0, 0]);
        let never_ends = StreamBody::new(
            futures::stream::iter([Ok(Frame::data(prefix))]).chain(futures::stream::pending()),
        );
        let err = block_on(read_unary(never_ends, 4 << 20)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(err.message().contains("found 1073741824 bytes"), "{err}");
        assert!(
            err.message()
                .contains("the limit is: 4194304 bytes (and a value may be at most 1048576 bytes)"),
            "{err}"
        );
    }

    /// Bytes beyond the announced message are refused as they arrive, not
    /// gathered until the body ends (it never does here).
    #[test]
    fn bytes_after_the_one_message_are_refused_at_once() {
        let message_and_more = Bytes::from_static(&[0, 0, 0, 0, 1, 7, 0, 0]);
        let never_ends = StreamBody::new(
            futures::stream::iter([Ok(Frame::data(message_and_more))])
                .chain(futures::stream::pending()),
        );
        let err = block_on(read_unary(never_ends, 64)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
        assert!(err.message().contains("send exactly one message"), "{err}");
    }

    #[test]
    fn compressed_and_truncated_messages_are_refused() {
        let compressed = Bytes::from_static(&[1, 0, 0, 0, 1, 7]);
        let err = block_on(read_unary(body(vec![Ok(Frame::data(compressed))]), 64)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");

        let truncated = Bytes::from_static(&[0, 0, 0, 0, 9, 7]);
        let err = block_on(read_unary(body(vec![Ok(Frame::data(truncated))]), 64)).unwrap_err();
        assert!(
            err.message().contains("ended after 1 of the 9 bytes"),
            "{err}"
        );

        let empty = block_on(read_unary(body(vec![]), 64)).unwrap();
        assert!(empty.message.is_none());
    }
}
