//! Stock gRPC clients reach the Unix socket as they are. Some send the
//! socket's path as HTTP/2's `:authority` (grpcurl `-unix`, grpc-python
//! on `unix:PATH`); that is no URI authority, and the HTTP/2 server resets
//! every such stream with PROTOCOL_ERROR before weft sees it. A Unix
//! socket has no host to name, so the authority means nothing here:
//! [`Lenient`] reads the client's side of the connection frame by frame
//! and, once the first request header block carries an authority that
//! would be refused, decodes and re-encodes every header block of that
//! connection with `:authority: localhost`. A connection whose first
//! authority is valid (weft's own clients) is passed through untouched
//! from then on, with no parsing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/2's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts.
const MAX_FRAME: usize = 16_384;
/// The largest header block gathered from a client (weftd's own limit on
/// headers is far below).
const MAX_BLOCK: usize = 1 << 20;
/// What a rewritten authority becomes.
const LOCALHOST: &[u8] = b"localhost";

/// Where the reading side is.
enum Mode {
    /// Before and up to the first request's headers.
    Undecided,
    /// Every header block is rewritten.
    Rewrite,
    /// The client's authority is fine: bytes pass as they come.
    Raw,
}

/// A header block being gathered over HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received (sent on unchanged if no rewrite is needed).
    original: Vec<u8>,
}

/// A server-side connection whose client's header blocks are fixed up as
/// the module says.
pub struct Lenient<S> {
    inner: S,
    mode: Mode,
    preface_seen: bool,
    /// Read from the client, not yet parsed.
    input: Vec<u8>,
    /// Parsed, ready for the server.
    output: Vec<u8>,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl<S> Lenient<S> {
    /// Wrap a freshly accepted connection.
    pub fn new(inner: S) -> Lenient<S> {
        Lenient {
            inner,
            mode: Mode::Undecided,
            preface_seen: false,
            input: Vec::new(),
            output: Vec::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Move every complete unit of `input` to `output`, rewriting as needed.
    fn parse(&mut self) -> io::Result<()> {
        loop {
            if matches!(self.mode, Mode::Raw) {
                self.output.append(&mut self.input);
                return Ok(());
            }
            if !self.preface_seen {
                if self.input.len() < PREFACE.len() {
                    return Ok(());
                }
                if &self.input[..PREFACE.len()] != PREFACE {
                    // Not HTTP/2 with prior knowledge: leave it to the server.
                    self.mode = Mode::Raw;
                    continue;
                }
                self.output.extend(self.input.drain(..PREFACE.len()));
                self.preface_seen = true;
            }
            if self.input.len() < 9 {
                return Ok(());
            }
            let len = usize::from(self.input[0]) << 16 | usize::from(self.input[1]) << 8 | usize::from(self.input[2]);
            if self.input.len() < 9 + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.input.drain(..9 + len).collect();
            self.frame(&frame)?;
        }
    }

    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        match kind {
            HEADERS => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*p.first().ok_or_else(|| bad("a padded HEADERS frame without its length"))?);
                    p = &p[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let head: [u8; 5] =
                        p.get(..5).and_then(|h| h.try_into().ok()).ok_or_else(|| bad("short priority"))?;
                    priority = Some(head);
                    p = &p[5..];
                }
                let fragment =
                    p.get(..p.len().saturating_sub(pad)).filter(|_| pad <= p.len()).ok_or_else(|| bad("padding"))?;
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    original: frame.to_vec(),
                });
            }
            CONTINUATION if self.block.as_ref().is_some_and(|b| b.stream == stream) => {
                let b = self.block.as_mut().ok_or_else(|| bad("CONTINUATION"))?;
                b.fragment.extend_from_slice(payload);
                b.original.extend_from_slice(frame);
                if b.fragment.len() > MAX_BLOCK {
                    return Err(bad("a header block over 1 MiB"));
                }
            }
            _ => {
                self.output.extend_from_slice(frame);
                return Ok(());
            }
        }
        if flags & END_HEADERS != 0
            && let Some(b) = self.block.take()
        {
            self.finish(b)?;
        }
        Ok(())
    }

    /// A whole header block: on unchanged, or rewritten.
    fn finish(&mut self, b: Block) -> io::Result<()> {
        let mut headers = self.decoder.decode(&b.fragment).map_err(|e| bad(&format!("HPACK: {e:?}")))?;
        if matches!(self.mode, Mode::Undecided) {
            let refused = headers.iter().any(|(n, v)| n == b":authority" && !acceptable(v));
            if !refused {
                self.output.extend_from_slice(&b.original);
                self.mode = Mode::Raw;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        for (n, v) in &mut headers {
            if n == b":authority" && !acceptable(v) {
                *v = LOCALHOST.to_vec();
            }
        }
        let block = self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first = Vec::new();
        if let Some(p) = b.priority {
            first.extend_from_slice(&p);
        }
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let mut flags = if b.end_stream { END_STREAM } else { 0 } | if b.priority.is_some() { PRIORITY } else { 0 };
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.push_frame(HEADERS, flags, b.stream, &first);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
            self.push_frame(CONTINUATION, if more.is_empty() { END_HEADERS } else { 0 }, b.stream, chunk);
            rest = more;
        }
        Ok(())
    }

    fn push_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len();
        self.output.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        self.output.extend_from_slice(&stream.to_be_bytes());
        self.output.extend_from_slice(payload);
    }
}

/// An authority the HTTP/2 server takes.
fn acceptable(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP/2 from the client: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for Lenient<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if !me.output.is_empty() {
                let n = me.output.len().min(buf.remaining());
                buf.put_slice(&me.output[..n]);
                me.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if matches!(me.mode, Mode::Raw) && me.input.is_empty() {
                return Pin::new(&mut me.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // The client closed: whatever is left goes as it is.
                    me.output.append(&mut me.input);
                    if me.output.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    me.input.extend_from_slice(rb.filled());
                    me.parse()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lenient<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Lenient<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut l = Lenient::new(());
        l.push_frame(kind, flags, stream, payload);
        l.output
    }

    fn headers(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        loona_hpack::Decoder::new().decode(block).unwrap()
    }

    /// Feed `bytes` in pieces of `step` and collect what the server reads.
    fn through(bytes: &[u8], step: usize) -> Vec<u8> {
        let mut l = Lenient::new(());
        for c in bytes.chunks(step) {
            l.input.extend_from_slice(c);
            l.parse().unwrap();
        }
        l.output
    }

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        [(&b":method"[..], &b"POST"[..]), (b":scheme", b"http"), (b":path", b"/weft.v1.NetworkService/ListNetworks")]
            .into_iter()
            .chain([(&b":authority"[..], authority), (b"content-type", b"application/grpc")])
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_path_as_authority_becomes_localhost_in_every_block() {
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x4, 0, 0, b"")); // SETTINGS
        for stream in [1u32, 3] {
            let req = request(b"/run/weft/weft.sock");
            let block = enc.encode(req.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            // Split over HEADERS + CONTINUATION, padded, to exercise the gathering.
            let (a, b) = block.split_at(block.len() / 2);
            let mut padded = vec![3u8];
            padded.extend_from_slice(a);
            padded.extend_from_slice(&[0, 0, 0]);
            wire.extend(frame(HEADERS, PADDED, stream, &padded));
            wire.extend(frame(CONTINUATION, END_HEADERS, stream, b));
            wire.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        for step in [1, 7, 4096] {
            let out = through(&wire, step);
            assert_eq!(&out[..PREFACE.len()], PREFACE);
            // Parse what the server would read, and decode its header blocks in order.
            let mut dec = loona_hpack::Decoder::new();
            let mut at = PREFACE.len();
            let mut seen = Vec::new();
            while at < out.len() {
                let len = usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
                let (kind, flags) = (out[at + 3], out[at + 4]);
                if kind == HEADERS {
                    assert_eq!(flags & PADDED, 0);
                    assert_ne!(flags & END_HEADERS, 0);
                    let h = dec.decode(&out[at + 9..at + 9 + len]).unwrap();
                    let authority = h.iter().find(|(n, _)| n == b":authority").map(|(_, v)| v.clone());
                    assert_eq!(authority.as_deref(), Some(LOCALHOST));
                    seen.push(h.len());
                }
                at += 9 + len;
            }
            assert_eq!(seen, [5, 5], "both requests, every header kept");
        }
    }

    #[test]
    fn a_valid_authority_passes_untouched() {
        let mut enc = loona_hpack::Encoder::new();
        let mut wire = PREFACE.to_vec();
        let req = request(b"weftd.local");
        let block = enc.encode(req.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        wire.extend(frame(HEADERS, END_HEADERS, 1, &block));
        wire.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        assert_eq!(through(&wire, 5), wire);
        assert_eq!(headers(&block).len(), 5);
        assert!(!acceptable(b"/run/weft/weft.sock") && acceptable(b"localhost"));
    }
}
