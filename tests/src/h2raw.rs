//! A deliberately naive HTTP/2 client over mutual TLS, for the hostile-input
//! tests.
//!
//! A real client (hyper, h2, tonic) keeps the rules: it never opens more
//! streams than the server allows, and its gRPC length prefixes are honest.
//! This one writes frames exactly as it is told, so the tests can check that
//! the *server* enforces the rules instead of trusting clients to keep them.
//!
//! It does just enough HTTP/2 to be understood: the preface, SETTINGS (and
//! their acknowledgement), HEADERS, DATA, RST_STREAM, WINDOW_UPDATE when told,
//! and reading frames back with the response headers HPACK-decoded. No flow
//! control of its own: tests send less than the server's window.

use std::{io, net::SocketAddr, path::Path, sync::Arc};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest [`RawH2::until_end_of`] waits, and [`tls_only`] connects.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The largest frame payload every HTTP/2 peer must accept.
pub const MAX_FRAME: usize = 16_384;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// HTTP/2 error codes the tests look for.
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame from the server, as much as the tests need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Response headers or trailers, decoded.
    Headers {
        stream: u32,
        end_stream: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        len: usize,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: String,
    },
    /// SETTINGS, PING, WINDOW_UPDATE and the rest.
    Other {
        kind: u8,
    },
}

impl Frame {
    /// The value of header `name` in a HEADERS frame.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Frame::Headers { headers, .. } => headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// One HTTP/2 connection over mutual TLS, driven frame by frame.
pub struct RawH2 {
    tls: TlsStream<TcpStream>,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

impl std::fmt::Debug for RawH2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawH2")
            .field("next_stream", &self.next_stream)
            .finish_non_exhaustive()
    }
}

impl RawH2 {
    /// Connects to `addr` as `identity` (a certificate in `certs`) and opens
    /// HTTP/2: the preface and an empty SETTINGS frame.
    pub async fn connect(certs: &Path, identity: &str, addr: SocketAddr) -> io::Result<Self> {
        let tls = tls_only(certs, identity, addr).await?;
        let mut conn = RawH2 {
            tls,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        };
        conn.tls.write_all(PREFACE).await?;
        conn.write_frame(SETTINGS, 0, 0, &[]).await?;
        Ok(conn)
    }

    /// Opens a stream calling the gRPC method `path` (`/pkg.Service/Method`);
    /// with `end_stream`, the request has no body. Returns the stream id.
    pub async fn open(&mut self, path: &str, end_stream: bool) -> io::Result<u32> {
        self.open_with(path, end_stream, &[]).await
    }

    /// [`RawH2::open`], with `extra` headers such as `grpc-timeout`.
    pub async fn open_with(
        &mut self,
        path: &str,
        end_stream: bool,
        extra: &[(&str, &str)],
    ) -> io::Result<u32> {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut headers = vec![
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"https"),
            (b":path", path.as_bytes()),
            (b":authority", b"clusterlab"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let block = self.encoder.encode(headers);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.write_frame(HEADERS, flags, stream, &block).await?;
        Ok(stream)
    }

    /// Sends `bytes` on `stream` as DATA frames of at most [`MAX_FRAME`] bytes
    /// (none as one empty frame).
    pub async fn data(&mut self, stream: u32, bytes: &[u8], end_stream: bool) -> io::Result<()> {
        // No bytes is one empty frame, to carry END_STREAM.
        let chunks: Vec<&[u8]> = match bytes.is_empty() {
            true => vec![bytes],
            false => bytes.chunks(MAX_FRAME).collect(),
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let flags = if last && end_stream { END_STREAM } else { 0 };
            self.write_frame(DATA, flags, stream, chunk).await?;
        }
        Ok(())
    }

    /// Makes `increment` bytes more room for the server to send on `stream`
    /// and on the connection (WINDOW_UPDATE for both).
    pub async fn window_update(&mut self, stream: u32, increment: u32) -> io::Result<()> {
        for on in [stream, 0] {
            self.write_frame(WINDOW_UPDATE, 0, on, &increment.to_be_bytes())
                .await?;
        }
        Ok(())
    }

    /// Cancels `stream` with RST_STREAM.
    pub async fn reset(&mut self, stream: u32, code: u32) -> io::Result<()> {
        self.write_frame(RST_STREAM, 0, stream, &code.to_be_bytes())
            .await
    }

    /// Reads the next frame; `None` when the server closed the connection.
    /// SETTINGS and PING are acknowledged as a client must.
    pub async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 9];
        match self.tls.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.tls.read_exact(&mut payload).await?;
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        Ok(Some(match kind {
            DATA => Frame::Data { stream, len },
            HEADERS => {
                // The tests never ask for padding or priority, and servers
                // send neither; the block is the whole payload.
                let headers = self
                    .decoder
                    .decode(&payload)
                    .map_err(|e| io::Error::other(format!("HPACK: {e:?}")))?
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                Frame::Headers {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    headers,
                }
            }
            RST_STREAM => Frame::RstStream {
                stream,
                code: word(0),
            },
            GOAWAY => Frame::GoAway {
                last_stream: word(0) & 0x7fff_ffff,
                code: word(4),
                debug: String::from_utf8_lossy(&payload[8..]).into_owned(),
            },
            SETTINGS => {
                if flags & ACK == 0 {
                    self.write_frame(SETTINGS, ACK, 0, &[]).await?;
                }
                Frame::Other { kind }
            }
            PING => {
                if flags & ACK == 0 {
                    self.write_frame(PING, ACK, 0, &payload).await?;
                }
                Frame::Other { kind }
            }
            kind => Frame::Other { kind },
        }))
    }

    /// Reads frames until `stream` ends (trailers, or RST_STREAM), the
    /// connection goes away, or it closes; returns the frame that ended it.
    /// Fails with `TimedOut` after [`ANSWER_WITHIN`]: a server that never
    /// ends the stream (the very bug a test looks for) keeps answering
    /// pings, and the test would wait for good.
    pub async fn until_end_of(&mut self, stream: u32) -> io::Result<Option<Frame>> {
        let what = format!("stream {stream} did not end");
        within_answer_time(what, self.until_end_of_unbounded(stream)).await
    }

    async fn until_end_of_unbounded(&mut self, stream: u32) -> io::Result<Option<Frame>> {
        while let Some(frame) = self.next_frame().await? {
            match &frame {
                Frame::Headers {
                    stream: s,
                    end_stream: true,
                    ..
                }
                | Frame::RstStream { stream: s, .. }
                    if *s == stream =>
                {
                    return Ok(Some(frame));
                }
                Frame::GoAway { .. } => return Ok(Some(frame)),
                _ => {}
            }
        }
        Ok(None)
    }

    async fn write_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tls.write_all(&frame).await
    }
}

/// Connects to `addr` as `identity` (a certificate in `certs`) and finishes
/// the TLS handshake, and no more: not a byte of HTTP/2.
pub async fn tls_only(
    certs: &Path,
    identity: &str,
    addr: SocketAddr,
) -> io::Result<TlsStream<TcpStream>> {
    let (config, _) = certs::tls::client_config(certs, identity).map_err(io::Error::other)?;
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("clusterlab").expect("a valid name");
        TlsConnector::from(Arc::clone(&config))
            .connect(name, tcp)
            .await
    };
    within_answer_time(format!("no TLS connection to {addr}"), connect).await
}

/// `io`'s result, or a `TimedOut` error saying `what` happened (or did not)
/// within [`ANSWER_WITHIN`].
async fn within_answer_time<T>(
    what: String,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(ANSWER_WITHIN, io).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} within {ANSWER_WITHIN:?}"),
        )
    })?
}

/// A gRPC message frame: the 5-byte prefix (not compressed, `claimed_len`)
/// followed by `body`. An honest client sets `claimed_len` to `body.len()`.
pub fn grpc_message(claimed_len: u32, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(5 + body.len());
    message.push(0);
    message.extend_from_slice(&claimed_len.to_be_bytes());
    message.extend_from_slice(body);
    message
}
