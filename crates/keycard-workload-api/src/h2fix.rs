//! The grpc-python `:authority` fix.
//!
//! grpc-python and grpc-java clients (py-spiffe among them) dialing a Unix
//! socket send the socket path, percent-encoded, as the HTTP/2 `:authority`.
//! That is no valid URI authority, and the `h2` crate answers the stream
//! with RST_STREAM PROTOCOL_ERROR. [`AuthorityFix`] sits between the
//! accepted socket and the HTTP/2 server: it follows the client-to-server
//! frame stream, decodes every header block with an HPACK decoder that
//! tracks the client's dynamic table, replaces an `:authority` that is not a
//! valid authority with `localhost`, and re-encodes every block with
//! literals only, never touching the dynamic table, so the server's decoder
//! table stays empty and consistent. All other frames, and every byte from
//! server to client, pass through untouched. Malformed framing or HPACK
//! ends the connection with an error; nothing here panics or grows without
//! bound.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The value that replaces an invalid `:authority`.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Largest frame we emit: the smallest SETTINGS_MAX_FRAME_SIZE a server may
/// advertise, so always acceptable.
const OUT_MAX_FRAME: usize = 16_384;
/// Largest HEADERS or CONTINUATION frame payload accepted.
const MAX_HEADER_FRAME: usize = 1 << 20;
/// Largest header block (all fragments) accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Largest decoded header list (RFC 7541 size: name + value + 32 each).
const MAX_HEADER_LIST: usize = 1 << 20;
/// The HPACK dynamic table size the server allows (SETTINGS_HEADER_TABLE_SIZE
/// default; the h2 server does not change it).
const MAX_TABLE_SIZE: usize = 4096;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why the client's byte stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixError {
    /// The first 24 bytes were not the HTTP/2 preface.
    #[error("not an HTTP/2 connection preface")]
    Preface,
    /// A frame violated HTTP/2 framing.
    #[error("malformed HTTP/2 framing: {0}")]
    Framing(&'static str),
    /// A header block did not decode.
    #[error("malformed header block: {0}")]
    Hpack(String),
    /// A size limit was exceeded.
    #[error("{0} too large")]
    TooLarge(&'static str),
}

impl From<FixError> for io::Error {
    fn from(e: FixError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

#[derive(Debug)]
enum State {
    Preface,
    FrameHeader,
    /// Copying `n` more payload bytes of a frame we do not touch.
    Passthrough(usize),
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderPayload {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
}

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The byte-stream rewriter, independent of I/O: feed it what the client
/// sent, take what the server should read.
pub struct Fixer {
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    rewrites: u64,
}

impl std::fmt::Debug for Fixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixer")
            .field("state", &self.state)
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .field("rewrites", &self.rewrites)
            .finish()
    }
}

impl Default for Fixer {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixer {
    /// A rewriter expecting the connection preface.
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE_SIZE);
        Fixer {
            state: State::Preface,
            input: Vec::new(),
            output: Vec::new(),
            block: None,
            decoder,
            rewrites: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Bytes ready for the server.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Drops `n` bytes the server has read.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.output.len());
        self.output.drain(..n);
    }

    /// Feeds bytes the client sent; rewritten bytes appear in [`output`].
    ///
    /// [`output`]: Fixer::output
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FixError> {
        self.input.extend_from_slice(data);
        let mut pos = 0;
        let result = self.run(&mut pos);
        self.input.drain(..pos);
        result
    }

    fn run(&mut self, pos: &mut usize) -> Result<(), FixError> {
        loop {
            let avail = self.input.len() - *pos;
            match self.state {
                State::Preface => {
                    let n = avail.min(PREFACE.len());
                    if self.input[*pos..*pos + n] != PREFACE[..n] {
                        return Err(FixError::Preface);
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend_from_slice(PREFACE);
                    *pos += PREFACE.len();
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if avail < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let h = &self.input[*pos..*pos + FRAME_HEADER_LEN];
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let kind = h[3];
                    let flags = h[4];
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    if self.block.is_some() && kind != TYPE_CONTINUATION {
                        return Err(FixError::Framing(
                            "a header block was interrupted by another frame",
                        ));
                    }
                    match kind {
                        TYPE_HEADERS | TYPE_CONTINUATION => {
                            if len > MAX_HEADER_FRAME {
                                return Err(FixError::TooLarge("header frame"));
                            }
                            if stream == 0 {
                                return Err(FixError::Framing("header frame on stream 0"));
                            }
                            *pos += FRAME_HEADER_LEN;
                            self.state = State::HeaderPayload {
                                kind,
                                flags,
                                stream,
                                len,
                            };
                        }
                        TYPE_PUSH_PROMISE => {
                            // Clients never push; its header block would
                            // desynchronise the table we track.
                            return Err(FixError::Framing("PUSH_PROMISE from a client"));
                        }
                        _ => {
                            self.output
                                .extend_from_slice(&self.input[*pos..*pos + FRAME_HEADER_LEN]);
                            *pos += FRAME_HEADER_LEN;
                            self.state = State::Passthrough(len);
                        }
                    }
                }
                State::Passthrough(remaining) => {
                    if remaining == 0 {
                        self.state = State::FrameHeader;
                        continue;
                    }
                    if avail == 0 {
                        return Ok(());
                    }
                    let n = avail.min(remaining);
                    self.output.extend_from_slice(&self.input[*pos..*pos + n]);
                    *pos += n;
                    self.state = State::Passthrough(remaining - n);
                }
                State::HeaderPayload {
                    kind,
                    flags,
                    stream,
                    len,
                } => {
                    if avail < len {
                        return Ok(());
                    }
                    let payload = self.input[*pos..*pos + len].to_vec();
                    *pos += len;
                    self.state = State::FrameHeader;
                    self.header_frame(kind, flags, stream, &payload)?;
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), FixError> {
        let fragment = if kind == TYPE_HEADERS {
            let mut p = payload;
            let mut pad = 0usize;
            if flags & FLAG_PADDED != 0 {
                let (&n, rest) = p
                    .split_first()
                    .ok_or(FixError::Framing("padded HEADERS without a pad length"))?;
                pad = usize::from(n);
                p = rest;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                if p.len() < 5 {
                    return Err(FixError::Framing("HEADERS priority fields truncated"));
                }
                let mut prio = [0u8; 5];
                prio.copy_from_slice(&p[..5]);
                priority = Some(prio);
                p = &p[5..];
            }
            if pad > p.len() {
                return Err(FixError::Framing("HEADERS padding longer than the frame"));
            }
            let fragment = &p[..p.len() - pad];
            if self.block.is_some() {
                return Err(FixError::Framing("HEADERS inside a header block"));
            }
            self.block = Some(Block {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                priority,
                fragment: Vec::new(),
            });
            fragment
        } else {
            match &self.block {
                Some(b) if b.stream == stream => {}
                Some(_) => {
                    return Err(FixError::Framing("CONTINUATION on another stream"));
                }
                None => return Err(FixError::Framing("CONTINUATION without HEADERS")),
            }
            payload
        };
        let Some(block) = self.block.as_mut() else {
            return Err(FixError::Framing("no header block"));
        };
        if block.fragment.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(FixError::TooLarge("header block"));
        }
        block.fragment.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.emit(block)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, block: Block) -> Result<(), FixError> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        let mut too_large = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_HEADER_LIST {
                    too_large = true;
                } else if !too_large {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| FixError::Hpack(e.to_string()))?;
        if too_large {
            return Err(FixError::TooLarge("header list"));
        }
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                tracing::debug!(
                    authority = %String::from_utf8_lossy(value),
                    "replacing an invalid :authority with localhost"
                );
                *value = REPLACEMENT_AUTHORITY.to_vec();
                self.rewrites += 1;
            }
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16 * headers.len());
        for (name, value) in &headers {
            encode_literal(&mut encoded, name, value);
        }
        self.write_block(&block, &encoded);
        Ok(())
    }

    fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let prio_len = if block.priority.is_some() { 5 } else { 0 };
        let first_room = OUT_MAX_FRAME - prio_len;
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = 0u8;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        write_frame_header(
            &mut self.output,
            first.len() + prio_len,
            TYPE_HEADERS,
            flags,
            block.stream,
        );
        if let Some(prio) = block.priority {
            self.output.extend_from_slice(&prio);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(OUT_MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            write_frame_header(
                &mut self.output,
                chunk.len(),
                TYPE_CONTINUATION,
                flags,
                block.stream,
            );
            self.output.extend_from_slice(chunk);
        }
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // len <= OUT_MAX_FRAME, so it fits in 24 bits.
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// HPACK integer with an `n`-bit prefix (RFC 7541, 5.1); `first` holds the
/// pattern bits above the prefix.
fn encode_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A "literal header field never indexed" with a literal name, no Huffman
/// (RFC 7541, 6.2.3): it never touches the dynamic table, and keeps the
/// never-indexed promise for any field that had it.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x10);
    encode_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// An I/O stream whose client-to-server bytes go through a [`Fixer`].
#[derive(Debug)]
pub struct AuthorityFix<T> {
    inner: T,
    fixer: Fixer,
    scratch: Vec<u8>,
    eof: bool,
}

impl<T> AuthorityFix<T> {
    /// Wraps an accepted server-side stream.
    pub fn new(inner: T) -> Self {
        AuthorityFix {
            inner,
            fixer: Fixer::new(),
            scratch: vec![0; READ_CHUNK],
            eof: false,
        }
    }
    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
    /// How many `:authority` values were replaced so far.
    pub fn rewrites(&self) -> u64 {
        self.fixer.rewrites()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.fixer.output();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.fixer.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        this.eof = true;
                        continue;
                    }
                    if let Err(e) = this.fixer.feed(&this.scratch[..n]) {
                        tracing::info!(error = %e, "closing a Workload API connection: bad HTTP/2 input");
                        this.eof = true;
                        return Poll::Ready(Err(e.into()));
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
