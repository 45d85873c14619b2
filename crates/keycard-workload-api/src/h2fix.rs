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
    enabled: bool,
}

impl<T> AuthorityFix<T> {
    /// Wraps an accepted server-side stream.
    pub fn new(inner: T) -> Self {
        AuthorityFix {
            inner,
            fixer: Fixer::new(),
            scratch: vec![0; READ_CHUNK],
            eof: false,
            enabled: true,
        }
    }
    /// Wraps a stream without rewriting anything (to show what the fix is
    /// for).
    pub fn passthrough(inner: T) -> Self {
        AuthorityFix {
            inner,
            fixer: Fixer::new(),
            scratch: Vec::new(),
            eof: false,
            enabled: false,
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
        if !this.enabled {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;
    type RawFrame = (u8, u8, u32, Vec<u8>);

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = payload.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn lit_incremental_new(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x40);
        encode_int(out, 0, 7, name.len());
        out.extend_from_slice(name);
        encode_int(out, 0, 7, value.len());
        out.extend_from_slice(value);
    }

    fn lit_incremental_indexed_name(out: &mut Vec<u8>, idx: usize, value: &[u8]) {
        encode_int(out, 0x40, 6, idx);
        encode_int(out, 0, 7, value.len());
        out.extend_from_slice(value);
    }

    /// Block 1 fills the client's dynamic table; block 2 refers to it.
    fn blocks() -> (Vec<u8>, Vec<u8>) {
        let mut b1 = vec![0x3f, 0xe1, 0x1f]; // table size update: 4096
        b1.push(0x83); // :method POST
        b1.push(0x86); // :scheme http
        lit_incremental_indexed_name(&mut b1, 4, b"/SpiffeWorkloadAPI/FetchX509SVID");
        lit_incremental_indexed_name(&mut b1, 1, b"%2Ftmp%2Fagent.sock");
        lit_incremental_new(&mut b1, b"workload.spiffe.io", b"true");
        // never-indexed literal with a new name
        b1.push(0x10);
        encode_int(&mut b1, 0, 7, 2);
        b1.extend_from_slice(b"te");
        encode_int(&mut b1, 0, 7, 8);
        b1.extend_from_slice(b"trailers");
        // Block 2: dynamic entries 62 (workload.spiffe.io), 63 (:authority), 64 (:path).
        let b2 = vec![0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
        (b1, b2)
    }

    fn expected(authority: &[u8]) -> (Headers, Headers) {
        let h = |n: &str, v: &[u8]| (n.as_bytes().to_vec(), v.to_vec());
        let first = vec![
            h(":method", b"POST"),
            h(":scheme", b"http"),
            h(":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            h(":authority", authority),
            h("workload.spiffe.io", b"true"),
            h("te", b"trailers"),
        ];
        let second = vec![
            h(":method", b"POST"),
            h(":scheme", b"http"),
            h(":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            h(":authority", authority),
            h("workload.spiffe.io", b"true"),
        ];
        (first, second)
    }

    /// A client connection: preface, SETTINGS, a padded+priority HEADERS
    /// split over two CONTINUATIONs, DATA, a second HEADERS using the
    /// dynamic table, WINDOW_UPDATE, an unknown frame type.
    fn client_stream() -> Vec<u8> {
        let (b1, b2) = blocks();
        let mut s = PREFACE.to_vec();
        s.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        let mut p = vec![4u8]; // pad length
        p.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive dep on 0, weight 15
        p.extend_from_slice(&b1[..10]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        s.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &p));
        s.extend(frame(TYPE_CONTINUATION, 0, 1, &b1[10..20]));
        s.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &b1[20..]));
        s.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        s.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &b2,
        ));
        s.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0]));
        s.extend(frame(0xee, 0x1, 0, b"ext"));
        s
    }

    #[derive(Debug)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn parse_frames(mut b: &[u8]) -> Vec<Frame> {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            out.push(Frame {
                kind: b[3],
                flags: b[4],
                stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
                payload: b[9..9 + len].to_vec(),
            });
            b = &b[9 + len..];
        }
        out
    }

    /// What the server sees: header lists (decoded with a fresh decoder that
    /// must never need a dynamic table) and the other frames.
    fn server_view(out: &[u8]) -> (Vec<Headers>, Vec<RawFrame>) {
        let mut dec = loona_hpack::Decoder::new();
        let mut lists = Vec::new();
        let mut others = Vec::new();
        let mut block: Option<Vec<u8>> = None;
        for f in parse_frames(out) {
            match f.kind {
                TYPE_HEADERS => {
                    assert!(block.is_none());
                    assert_eq!(f.flags & FLAG_PADDED, 0);
                    let p = if f.flags & FLAG_PRIORITY != 0 {
                        assert_eq!(&f.payload[..5], &[0x80, 0, 0, 0, 15]);
                        &f.payload[5..]
                    } else {
                        &f.payload[..]
                    };
                    assert!(f.payload.len() <= OUT_MAX_FRAME);
                    block = Some(p.to_vec());
                }
                TYPE_CONTINUATION => {
                    assert!(f.payload.len() <= OUT_MAX_FRAME);
                    block.as_mut().unwrap().extend_from_slice(&f.payload);
                }
                _ => others.push((f.kind, f.flags, f.stream, f.payload)),
            }
            if matches!(f.kind, TYPE_HEADERS | TYPE_CONTINUATION) && f.flags & FLAG_END_HEADERS != 0
            {
                let b = block.take().unwrap();
                // Only never-indexed literals: the table is never touched.
                lists.push(dec.decode(&b).unwrap());
            }
        }
        (lists, others)
    }

    use keycard_core::XorShift as Rng;

    fn feed_split(input: &[u8], rng: &mut Rng) -> Result<(Vec<u8>, u64), FixError> {
        let mut f = Fixer::new();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(40));
            f.feed(&rest[..n])?;
            rest = &rest[n..];
            // The server reads some of what is ready.
            let take = rng.below(f.output().len() + 1);
            out.extend_from_slice(&f.output()[..take]);
            f.consume(take);
        }
        out.extend_from_slice(f.output());
        Ok((out, f.rewrites()))
    }

    #[test]
    fn rewrites_invalid_authority_in_every_split() {
        let input = client_stream();
        let (want1, want2) = expected(b"localhost");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let (out, rewrites) = feed_split(&input, &mut rng).unwrap();
            assert_eq!(rewrites, 2);
            let (lists, others) = server_view(&out);
            assert_eq!(lists, vec![want1.clone(), want2.clone()]);
            assert_eq!(
                others,
                vec![
                    (0x4, 0, 0, vec![0, 3, 0, 0, 0, 100]),
                    (0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0".to_vec()),
                    (0x8, 0, 0, vec![0, 0, 0x10, 0]),
                    (0xee, 0x1, 0, b"ext".to_vec()),
                ]
            );
        }
        // END_STREAM stays on the second HEADERS.
        let (out, _) = feed_split(&input, &mut rng).unwrap();
        let last_headers = parse_frames(&out)
            .into_iter()
            .rfind(|f| f.kind == TYPE_HEADERS)
            .unwrap();
        assert_eq!(last_headers.stream, 3);
        assert_ne!(last_headers.flags & FLAG_END_STREAM, 0);
    }

    #[test]
    fn valid_authority_is_kept() {
        let mut b = vec![0x83, 0x86, 0x84];
        lit_incremental_indexed_name(&mut b, 1, b"localhost:1234");
        let mut s = PREFACE.to_vec();
        s.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b));
        let mut f = Fixer::new();
        f.feed(&s).unwrap();
        assert_eq!(f.rewrites(), 0);
        let (lists, _) = server_view(f.output());
        assert_eq!(lists[0][3].1, b"localhost:1234");
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut b = vec![0x83, 0x86, 0x84];
        lit_incremental_indexed_name(&mut b, 1, b"/a/very/long/%2F/path");
        let big = vec![b'x'; 40_000];
        // literal without indexing, new name
        b.push(0x00);
        encode_int(&mut b, 0, 7, 5);
        b.extend_from_slice(b"x-big");
        encode_int(&mut b, 0, 7, big.len());
        b.extend_from_slice(&big);
        let mut s = PREFACE.to_vec();
        let (one, two) = b.split_at(16_000);
        s.extend(frame(TYPE_HEADERS, 0, 5, one));
        s.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, two));
        let mut f = Fixer::new();
        f.feed(&s).unwrap();
        let frames = parse_frames(f.output());
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|fr| fr.payload.len() <= OUT_MAX_FRAME));
        assert_eq!(
            frames
                .iter()
                .filter(|fr| fr.flags & FLAG_END_HEADERS != 0)
                .count(),
            1
        );
        let (lists, _) = server_view(f.output());
        assert_eq!(lists[0][3], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(lists[0][4].1.len(), 40_000);
    }

    #[test]
    fn malformed_input_is_refused() {
        let (b1, _) = blocks();
        let with_preface = |frames: Vec<Vec<u8>>| {
            let mut s = PREFACE.to_vec();
            for f in frames {
                s.extend(f);
            }
            s
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "preface"),
            (
                with_preface(vec![frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &b1)]),
                "continuation without headers",
            ),
            (
                with_preface(vec![
                    frame(TYPE_HEADERS, 0, 1, &b1[..5]),
                    frame(0x0, 0, 1, b"x"),
                ]),
                "interrupted block",
            ),
            (
                with_preface(vec![
                    frame(TYPE_HEADERS, 0, 1, &b1[..5]),
                    frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &b1[5..]),
                ]),
                "continuation on another stream",
            ),
            (
                with_preface(vec![frame(
                    TYPE_HEADERS,
                    FLAG_PADDED | FLAG_END_HEADERS,
                    1,
                    &[200, 1, 2],
                )]),
                "padding too long",
            ),
            (
                with_preface(vec![frame(
                    TYPE_HEADERS,
                    FLAG_PRIORITY | FLAG_END_HEADERS,
                    1,
                    &[1, 2],
                )]),
                "priority truncated",
            ),
            (
                with_preface(vec![frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70])]),
                "index out of range",
            ),
            (
                with_preface(vec![frame(
                    TYPE_HEADERS,
                    FLAG_END_HEADERS,
                    1,
                    &[0x3f, 0xe1, 0x3f],
                )]),
                "table size above the allowed maximum",
            ),
            (
                with_preface(vec![frame(
                    TYPE_PUSH_PROMISE,
                    FLAG_END_HEADERS,
                    1,
                    &[0, 0, 0, 2, 0x82],
                )]),
                "push promise",
            ),
            (
                with_preface(vec![frame(TYPE_HEADERS, FLAG_END_HEADERS, 0, &[0x82])]),
                "stream 0",
            ),
        ];
        for (input, what) in cases {
            let mut f = Fixer::new();
            assert!(f.feed(&input).is_err(), "{what} accepted");
        }
        // A header frame larger than the limit is refused from its header
        // alone, before its payload arrives.
        let mut f = Fixer::new();
        let mut s = PREFACE.to_vec();
        s.extend_from_slice(&[0xff, 0xff, 0xff, TYPE_HEADERS, 0, 0, 0, 0, 1]);
        assert_eq!(f.feed(&s).unwrap_err(), FixError::TooLarge("header frame"));
    }

    #[test]
    fn random_input_never_panics_and_stays_bounded() {
        let mut rng = Rng(12345);
        let base = client_stream();
        for round in 0..2000 {
            let mut input = if round % 2 == 0 {
                base.clone()
            } else {
                PREFACE.to_vec()
            };
            // Mutate: flip bytes after the preface, or append random bytes.
            let n = 1 + rng.below(64);
            for _ in 0..n {
                if round % 2 == 0 {
                    let i = PREFACE.len() + rng.below(input.len() - PREFACE.len());
                    input[i] = rng.next_u64() as u8;
                } else {
                    input.push(rng.next_u64() as u8);
                }
            }
            let mut f = Fixer::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let k = 1 + rng.below(rest.len().min(64));
                if f.feed(&rest[..k]).is_err() {
                    break;
                }
                rest = &rest[k..];
                assert!(f.output().len() <= 4 * (MAX_HEADER_LIST + OUT_MAX_FRAME));
                let out = f.output().len();
                f.consume(out);
            }
        }
    }
}
